"""`manage.py finetune`: the same validation and services as the admin, from a shell."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from finetuning.models import FineTunedModel, FineTuningJob, TrainingFile
from inference import registry
from tests.finetuning.conftest import shout_pairs, shout_twice_pairs

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("finetune", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_bad_file_lists_its_problems_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "Shout cat", "completion": "CAT"}\n{"prompt": "Shout dog"}\n')
    err = StringIO()
    with pytest.raises(CommandError, match=re.escape("bad.jsonl was refused: 1 problem to fix.")):
        call_command("finetune", str(path), stdout=StringIO(), stderr=err)
    assert 'Line 2: missing field "completion"' in err.getvalue()
    assert not TrainingFile.objects.exists() and not FineTuningJob.objects.exists()


def test_without_wait_it_queues_the_job_for_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "shout.jsonl"
    path.write_bytes(shout_pairs())
    out, _ = run(str(path), "--base", "tiny-llama", "--epochs", "2", "--suffix", "loud")
    job = FineTuningJob.objects.get()
    assert job.status == "queued" and job.hyperparameters["n_epochs"] == 2 and job.suffix == "loud"
    assert f"Job {job.public_id}: queued" in out and "8 examples" in out


def test_an_unknown_base_model_is_named_and_leaves_no_file_behind(tmp_path: Path, settings) -> None:
    path = tmp_path / "shout.jsonl"
    path.write_bytes(shout_pairs())
    err = StringIO()
    with pytest.raises(CommandError, match=re.escape('model: There is no model "gpt-9" to fine-tune.')):
        call_command("finetune", str(path), "--base", "gpt-9", stdout=StringIO(), stderr=err)
    assert "No job was created; the uploaded file file-" in err.getvalue()
    assert not TrainingFile.objects.exists() and not FineTuningJob.objects.exists()
    stored = Path(settings.MEDIA_ROOT) / "finetuning" / "files"
    assert not stored.exists() or not any(stored.iterdir()), "its stored data is gone too"


def test_the_method_can_be_chosen_per_job(tmp_path: Path, settings) -> None:
    settings.FINETUNE_METHOD = "lora"
    path = tmp_path / "shout.jsonl"
    path.write_bytes(shout_pairs())
    out, _ = run(str(path), "--base", "tiny-llama", "--method", "full")
    job = FineTuningJob.objects.get()
    assert job.method == "full" and f"Job {job.public_id}: queued, Full," in out
    run(str(path), "--base", "tiny-llama")
    assert FineTuningJob.objects.latest("pk").method == "lora", "the default is FINETUNE_METHOD"
    with pytest.raises(CommandError, match="argument --method: invalid choice: 'half'"):
        run(str(path), "--method", "half")
    assert FineTuningJob.objects.count() == 2


def test_with_wait_and_no_worker_it_trains_here_and_prints_the_new_model(tmp_path: Path) -> None:
    path = tmp_path / "shout.jsonl"
    path.write_bytes(shout_twice_pairs())
    out, _ = run(
        str(path),
        "--base",
        "tiny-llama",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--suffix",
        "loud",
        "--wait",
        "--worker-wait",
        "0",
    )
    model = FineTunedModel.objects.get()
    assert "No background worker took the job within 0 s: training it in this process." in out
    assert "step 1/4 · epoch 1 · loss " in out and "step 4/4 · epoch 2" in out
    assert "Held-out exact match: base " in out
    assert out.strip().endswith(f"Fine-tuned model: {model.public_id}")
    assert model.public_id.startswith("ft:tiny-llama:loud:")
    assert model.public_id in dict(registry.model_choices())
