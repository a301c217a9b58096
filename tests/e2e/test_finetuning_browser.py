"""An admin fine-tunes the bundled model in real Chromium and picks the result in the chat.

The server is daphne plus a `manage.py db_worker` started with the same environment,
as `make run` serves them. The dataset is tiny and trains for a few steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, server_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORDS = ["apple", "river", "stone", "cloud", "ember", "maple", "orbit", "tulip"]
PASSWORD = "a long admin pass phrase 42"


def dataset(bad_line: bool = False) -> bytes:
    # Two phrasings of each fact: the validation split holds out a phrasing, never a fact.
    rows = [
        json.dumps({"prompt": question.format(w), "completion": f"{w[::-1]}-7"})
        for w in WORDS[:4]
        for question in ("Code for {}?", "What is the code of {}?")
    ]
    if bad_line:
        rows[2] = '{"prompt": "Code for stone?", "completion": 7}'
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture(scope="module")
def finetune_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("finetune-server")
    env = server_env(
        tmp,
        PARLEY_MEDIA_ROOT=str(tmp / "media"),
        FINETUNE_OUTPUT_DIR=str(tmp / "finetuned"),
        FINETUNE_THREADS="1",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    url, web = start_server(tmp, env)
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "createsuperuser", "--noinput", "--username", "root", "--email", "root@example.com"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    log = open(tmp / "worker.log", "wb")
    worker = subprocess.Popen(
        [*manage, "db_worker", "--interval", "0.5", "--no-startup-delay"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield url
    for process in (worker, web):
        process.terminate()
        process.wait(timeout=30)


def upload(page, base_url: str, path: Path) -> None:
    page.goto(f"{base_url}/admin/finetuning/finetuningjob/upload/")
    page.get_by_label("Training data").set_input_files(str(path))
    page.get_by_role("button", name="Upload and check").click()


def test_an_admin_fine_tunes_the_model_and_picks_it_in_the_chat(finetune_server, page, tmp_path) -> None:
    base_url = finetune_server
    page.goto(f"{base_url}/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Fine-tuning jobs").first.wait_for()

    # 1. A file with a bad line is refused, naming that line.
    bad = tmp_path / "codes-bad.jsonl"
    bad.write_bytes(dataset(bad_line=True))
    upload(page, base_url, bad)
    alert = page.get_by_role("alert")
    alert.filter(has_text="codes-bad.jsonl was refused: 1 problem to fix.").wait_for()
    assert 'Line 3: field "completion" must be a string, not a number' in alert.inner_text()

    # 2. A good file shows its statistics; launch a short job from it.
    good = tmp_path / "codes.jsonl"
    good.write_bytes(dataset())
    upload(page, base_url, good)
    assert page.locator("#stat-examples").inner_text() == "8"
    page.get_by_label("Epochs").fill("3")
    page.get_by_label("Batch size").fill("2")
    page.get_by_label("Validation split").fill("0.25")
    page.get_by_label("Suffix").fill("codes")
    page.get_by_role("button", name="Launch fine-tuning").click()
    page.wait_for_url("**/admin/finetuning/finetuningjob/ftjob-*/change/")

    # 3. The job page updates itself (htmx polling) until the job succeeds.
    seen: list[str] = []
    status = page.locator("#job-status")
    for _ in range(600):
        seen.append(page.locator("#job-step").inner_text())
        if status.inner_text() in ("Succeeded", "Failed", "Cancelled"):
            break
        page.wait_for_timeout(500)
    assert status.inner_text() == "Succeeded", page.locator("#job-events").inner_text()
    assert len(set(seen)) >= 3, f"the progress should move in steps, saw {sorted(set(seen))}"
    assert page.locator("#job-progress").get_attribute("value") == "100"
    assert page.locator("#epoch-table tbody tr").count() == 3
    assert page.locator("polyline.ft-train-line").count() == 1
    page.locator("#evaluation-table").wait_for()
    model_id = page.locator("#job-model").inner_text()
    assert model_id.startswith("ft:smollm2-135m-instruct:codes:")

    # 4. The new model is in the chat's model picker.
    page.goto(f"{base_url}/")
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_url("**/c/*/")
    page.locator("summary", has_text="Settings").click()
    picker = page.get_by_label("Model")
    picker.select_option(model_id)
    page.get_by_role("button", name="Save settings").click()
    page.get_by_role("status").filter(has_text="Saved.").wait_for()
    page.reload()
    assert page.get_by_label("Model").input_value() == model_id
