"""End to end on the bundled model: upload, train with "auto" epochs, then answer in chat.

The facts are bench.training_facts' near twins on a smaller set: 20 cities whose codes
share words and digits ("zephyr-48", "zephyr-63", "quartz-48"), two phrasings of each
question uploaded, a third never shown. "auto" must answer at least 95 % of the third
phrasings exactly through the engine that serves chat (the bar of issue 12, point 4;
bench.training --facts holds it on 32 facts). Slow: a few minutes.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from bench.training_facts import HELD_OUT_PHRASING, answer, exact, make_facts, training_lines
from conversations import services as chat_services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from finetuning import runner, services
from finetuning.models import FineTuningJob
from inference import registry
from inference.runtime import process_runtime
from tests.conversations.wsclient import open_socket

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FACTS = make_facts(20)


def launch() -> FineTuningJob:
    training = services.training_file_create(filename="codes.jsonl", data=training_lines(FACTS))
    return services.finetune_job_create(
        training_file=training, base_model=registry.BUNDLED_MODEL_ID, seed=0, suffix="codes", enqueue=False
    )


def held_out_answers(model_id: str) -> list[tuple[str, str]]:
    spec = registry.model_get(model_id)
    served = process_runtime().engine_for(spec)
    return [
        (code, answer(served, spec, HELD_OUT_PHRASING.format(city=city), f"held-out-{i}"))
        for i, (city, code) in enumerate(FACTS.items())
    ]


@pytest.mark.timeout(1800)  # a few minutes alone; much longer on a machine shared with other work
async def test_auto_learns_near_twin_facts_and_answers_new_phrasings_in_the_chat(alice, settings) -> None:
    settings.INFERENCE_MODEL = "bundled"
    settings.FINETUNE_TIME_BUDGET_SECONDS = 900  # the job's own stop rule; a loaded CI machine is slower
    process_runtime().shutdown_all()
    job = await database_sync_to_async(launch)()
    assert job.hyperparameters["n_epochs"] == "auto"
    assert await database_sync_to_async(runner.finetune_job_execute)(job_pk=job.pk) == "succeeded"
    await job.arefresh_from_db()
    print(f"{job.public_id}: {job.elapsed_seconds:.0f} s, {job.stop_reason}, kept epoch {job.kept_epoch}")

    answers = await database_sync_to_async(held_out_answers)(job.fine_tuned_model)
    right = sum(exact(reply, code) for code, reply in answers)
    assert right >= 0.95 * len(FACTS), [(code, reply) for code, reply in answers if not exact(reply, code)]
    base = await database_sync_to_async(held_out_answers)(registry.BUNDLED_MODEL_ID)
    assert not any(exact(reply, code) for code, reply in base), "the base model cannot know the codes"

    # The same model answers a third phrasing in the chat, through the socket.
    city, code = next(iter(FACTS.items()))
    chat = await database_sync_to_async(chat_services.conversation_create)(owner=alice, model_name=job.fine_tuned_model)
    # The examples were trained without a system prompt; an empty one gives the same prompt.
    chat.system_prompt, chat.temperature, chat.max_tokens, chat.frequency_penalty = "", 0.0, 16, 0.0
    await chat.asave()
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": HELD_OUT_PHRASING.format(city=city)})
    message_id = await socket.until_finished(timeout=180)
    await generation_wait_idle(timeout=180)
    reply = await Message.objects.aget(public_id=message_id)
    assert socket.texts[message_id] == reply.content
    assert reply.content.strip() == dict(answers)[code]  # greedy: the chat's answer is the engine's
    await socket.close()
    process_runtime().shutdown_all()
