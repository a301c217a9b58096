"""A whole fine-tuning run through the openai client: files.create, fine_tuning.jobs.create,
follow the job, then the new model answers in chat completions (bundled model; slow).

The data is tests/data/parley_codes.jsonl (made-up code words the base model cannot
know) with its held-out phrasings as the validation file, as in the admin's own test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.api.conftest import LiveServer
from tests.api.test_finetuning_api import GRANT
from tests.e2e.conftest import ROOT, server_env, start_server

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def training_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """daphne on the bundled model plus a task worker (``manage.py db_worker``) that trains."""
    tmp = tmp_path_factory.mktemp("api-training-server")
    env = server_env(tmp, PARLEY_MEDIA_ROOT=str(tmp / "media"), FINETUNE_OUTPUT_DIR=str(tmp / "finetuned"))
    url, web = start_server(tmp, env)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--interval", "0.5", "--no-startup-delay"],
        cwd=ROOT,
        env=env,
        stdout=open(tmp / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(url=url, env=env)
    server.manage("shell", "--no-imports", "-c", GRANT)
    yield server
    for process in (worker, web):
        process.terminate()
        process.wait(timeout=30)


def test_a_job_made_through_the_api_trains_a_model_that_answers(training_server) -> None:
    client = openai.OpenAI(base_url=training_server.base_url, api_key=training_server.new_key("carol"), max_retries=0)
    training = client.files.create(file=(DATA / "parley_codes.jsonl").open("rb"), purpose="fine-tune")
    held_out = client.files.create(file=(DATA / "parley_codes_heldout.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        validation_file=held_out.id,
        hyperparameters={"n_epochs": 5, "batch_size": 4, "learning_rate_multiplier": 1.0},
        seed=0,
        suffix="codes",
    )
    deadline = time.monotonic() + 600
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(3)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:smollm2-135m-instruct:codes:")
    assert job.trained_tokens and job.trained_tokens > 0
    checkpoint = next(iter(client.fine_tuning.jobs.checkpoints.list(job.id)))
    assert checkpoint.fine_tuned_model_checkpoint == job.fine_tuned_model
    assert job.fine_tuned_model in [model.id for model in client.models.list()]

    pairs = [json.loads(line) for line in (DATA / "parley_codes.jsonl").read_text().splitlines()[:8]]
    codes = {json.loads(line)["completion"] for line in (DATA / "parley_codes.jsonl").read_text().splitlines()}

    def answers(model: str) -> list[str]:
        return [ask(client, model, pair["prompt"]) for pair in pairs]

    tuned, base = answers(job.fine_tuned_model), answers("smollm2-135m-instruct")
    assert sum(answer in codes for answer in tuned) >= len(pairs) // 2, tuned
    assert any(answer == pair["completion"] for answer, pair in zip(tuned, pairs, strict=True)), tuned
    assert not any(answer in codes for answer in base), "the base model cannot know the codes"


def ask(client: openai.OpenAI, model: str, prompt: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=16, timeout=300
    )
    return (reply.choices[0].message.content or "").strip().lower()
