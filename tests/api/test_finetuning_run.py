"""A whole fine-tuning run through the openai client: files.create, fine_tuning.jobs.create,
follow the job, then the new model answers in chat completions (bundled model; slow).

The data is the part of tests/data/parley_codes.jsonl (made-up code words the base
model cannot know) about four words, four phrasings each, with their held-out
phrasings as the validation file; epochs are "auto", so the job trains until it has
learnt them (tests/finetuning/test_real_finetune.py holds the full bar on more facts).
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
    # One thread at normal priority: the test machine runs other work, where two threads
    # spin and a lowered priority starves the job (docs/finetuning.md).
    env = server_env(
        tmp,
        PARLEY_MEDIA_ROOT=str(tmp / "media"),
        FINETUNE_OUTPUT_DIR=str(tmp / "finetuned"),
        FINETUNE_THREADS="1",
        FINETUNE_NICENESS="0",
    )
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
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker in the middle of a training step
            process.kill()
            process.wait()


CODES = {"zorblat", "quimset", "vandrix", "plomtek"}  # apple, river, mountain, lantern


def lines_about(path: Path) -> bytes:
    """The lines of ``path`` whose completion is one of CODES."""
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["completion"] in CODES]
    return ("\n".join(kept) + "\n").encode()


def test_a_job_made_through_the_api_trains_a_model_that_answers(training_server) -> None:
    client = openai.OpenAI(base_url=training_server.base_url, api_key=training_server.new_key("carol"), max_retries=0)
    training = client.files.create(file=("codes.jsonl", lines_about(DATA / "parley_codes.jsonl")), purpose="fine-tune")
    held_out = client.files.create(
        file=("codes_heldout.jsonl", lines_about(DATA / "parley_codes_heldout.jsonl")), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=training.id,
        validation_file=held_out.id,
        hyperparameters={"n_epochs": "auto", "batch_size": 4, "max_epochs": 15, "time_budget_seconds": 420},
        seed=0,
        suffix="codes",
    )
    deadline = time.monotonic() + 900
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(3)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:smollm2-135m-instruct:codes:")
    assert job.trained_tokens and job.trained_tokens > 0
    checkpoint = next(iter(client.fine_tuning.jobs.checkpoints.list(job.id)))
    assert checkpoint.fine_tuned_model_checkpoint == job.fine_tuned_model
    assert job.fine_tuned_model in [model.id for model in client.models.list()]

    pairs = [json.loads(line) for line in lines_about(DATA / "parley_codes.jsonl").decode().splitlines()[:8]]

    def answers(model: str) -> list[str]:
        return [ask(client, model, pair["prompt"]) for pair in pairs]

    tuned, base = answers(job.fine_tuned_model), answers("smollm2-135m-instruct")
    # "auto" trained until the examples were learnt (greedy, exact), so chat answers them.
    assert sum(answer == pair["completion"] for answer, pair in zip(tuned, pairs, strict=True)) >= 6, tuned
    assert not any(answer in CODES for answer in base), "the base model cannot know the codes"


def ask(client: openai.OpenAI, model: str, prompt: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=16, timeout=300
    )
    return (reply.choices[0].message.content or "").strip().lower()
