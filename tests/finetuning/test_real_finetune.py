"""End to end on the bundled model: upload, train, evaluate, then chat with the new model.

The dataset (tests/data/parley_codes.jsonl) maps words to made-up code words the base
model cannot know; the held-out file asks for them in other words. Slow: a few minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from conversations import services as chat_services
from conversations.models import Message
from inference import engines
from inference.finetuning import runner, selectors, services
from inference.generation import generation_wait_idle
from inference.models import FineTuningJob
from tests.conversations.wsclient import open_socket

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DATA = Path(__file__).resolve().parents[1] / "data"


def launch() -> FineTuningJob:
    training = services.training_file_create(
        filename="parley_codes.jsonl", data=(DATA / "parley_codes.jsonl").read_bytes()
    )
    held_out = services.training_file_create(
        filename="parley_codes_heldout.jsonl", data=(DATA / "parley_codes_heldout.jsonl").read_bytes()
    )
    return services.finetune_job_create(
        training_file=training,
        validation_file=held_out,
        base_model="smollm2-135m-instruct",
        n_epochs=5,
        batch_size=4,
        learning_rate_multiplier=1.0,
        seed=0,
        suffix="codes",
        enqueue=False,
    )


@pytest.mark.timeout(1800)  # a few minutes alone; much longer on a machine shared with other work
async def test_a_fine_tune_learns_the_codes_and_answers_them_in_the_chat(alice, settings) -> None:  # type: ignore[no-untyped-def]
    settings.INFERENCE_MODEL = "bundled"
    settings.FINETUNE_EVAL_MAX_EXAMPLES = 12
    engines.shutdown_all()
    job = await database_sync_to_async(launch)()
    assert await database_sync_to_async(runner.finetune_job_execute)(job_pk=job.pk) == "succeeded"
    await job.arefresh_from_db()
    epochs = await database_sync_to_async(selectors.job_epoch_rows)(job=job)
    print(
        f"{job.public_id}: {job.elapsed_seconds:.0f} s, epochs {[(e.epoch, round(e.epoch_train_loss, 3), round(e.val_loss, 3)) for e in epochs]}, evaluation {job.evaluation['base']} -> {job.evaluation['fine_tuned']}"
    )
    assert epochs[-1].epoch_train_loss < epochs[0].epoch_train_loss / 2
    assert job.evaluation["examples"] == 12
    assert job.evaluation["fine_tuned"]["exact_match"] > job.evaluation["base"]["exact_match"]

    learned = next(row for row in job.evaluation["rows"] if row["fine_tuned_exact"])
    chat = await database_sync_to_async(chat_services.conversation_create)(owner=alice, model_name=job.fine_tuned_model)
    # The examples were trained without a system prompt; an empty one gives the same prompt.
    chat.system_prompt, chat.temperature, chat.max_tokens = "", 0.0, 16
    await chat.asave()
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": learned["prompt"]})
    message_id = await socket.until_finished(timeout=180)
    await generation_wait_idle(timeout=180)
    reply = await Message.objects.aget(public_id=message_id)
    assert learned["expected"].lower() in reply.content.lower()
    assert socket.texts[message_id] == reply.content
    await socket.close()
    engines.shutdown_all()
