""""auto" epochs on the tiny model: jobs train until they have learnt, and say why they stopped.

The tiny random model learns three two-letter codes with full fine-tuning at the highest
rate allowed in ~15 epochs; at the lowest it learns nothing and stops improving.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from api import finetuning as api
from finetuning import runner, services
from finetuning.models import FineTuningJob
from tests.finetuning.conftest import jsonl

pytestmark = pytest.mark.django_db

CODES = [{"prompt": "Code of Oslo?", "completion": "AB"}, {"prompt": "Code of Rome?", "completion": "CD"}]
CODES += [{"prompt": "Code of Lima?", "completion": "EF"}]
CONTRADICTORY = [*CODES, {"prompt": "Code of Oslo?", "completion": "XY"}]
LEARNS = {"method": "full", "batch_size": 3, "learning_rate_multiplier": 50, "validation_split": 0, "seed": 1}


def upload(rows: list[dict[str, str]], name: str = "codes.jsonl"):
    return services.training_file_create(filename=name, data=jsonl(rows))


def job_for(file, **options):
    settings = {**LEARNS, "max_epochs": 40, **options}
    return services.finetune_job_create(training_file=file, base_model="tiny-llama", enqueue=False, **settings)


def test_an_auto_job_trains_until_it_has_learnt_and_says_so_everywhere(superuser_client) -> None:
    job = job_for(upload(CODES))
    assert job.hyperparameters["n_epochs"] == "auto"

    assert runner.finetune_job_execute(job_pk=job.pk) == "succeeded"

    job.refresh_from_db()
    epochs = job.hyperparameters["n_epochs"]
    assert 1 < epochs < 40 and job.kept_epoch == epochs
    assert job.stop_reason == f"learnt 3/3 training examples after {epochs} epochs"
    events = [e["message"] for e in api.job_events(job_id=job.public_id, after=None, limit=100)["data"]]
    assert f"Training stopped: learnt 3/3 training examples after {epochs} epochs. Kept the weights of epoch {epochs}." in events
    # Each epoch says how many were learnt by then: the last one all of them.
    epoch_events = [m for m in events if m.startswith("Epoch ")]
    assert len(epoch_events) == epochs and all("training examples learnt." in m for m in epoch_events)
    assert any(m.startswith(f"Epoch {epochs} done") and m.endswith("; 3/3 training examples learnt.") for m in epoch_events)
    assert api.job_object(job)["stop_reason"] == job.stop_reason
    page = superuser_client.get(reverse("admin:finetuning_finetuningjob_change", args=[job.public_id])).content.decode()
    assert f"Learnt 3/3 training examples after {epochs} epochs · kept the weights of epoch {epochs}" in page


def test_a_job_that_stops_improving_before_it_learns_fails_naming_the_contradictions() -> None:
    file = upload(CONTRADICTORY)
    assert file.stats["warnings"] == ["Line 4: the same prompt as line 1 with a different completion (contradicts it)"]
    job = job_for(file, learning_rate_multiplier=0.001)

    assert runner.finetune_job_execute(job_pk=job.pk) == "failed"

    job.refresh_from_db()
    assert job.error_code == "training_stalled" and not job.fine_tuned_model
    assert job.error_message.startswith("The model stopped improving before it learnt its training examples")
    assert "0/4 training examples learnt" in job.error_message
    assert "Line 4: the same prompt as line 1 with a different completion" in job.error_message
    assert not (Path(job.training_file.stored_path).name and (Path(runner.settings.FINETUNE_OUTPUT_DIR) / job.public_id).exists())


def test_a_stalled_job_without_contradictions_suggests_a_higher_learning_rate() -> None:
    job = job_for(upload(CODES), learning_rate_multiplier=0.001)
    assert runner.finetune_job_execute(job_pk=job.pk) == "failed"
    job.refresh_from_db()
    assert "Try a higher learning rate multiplier" in job.error_message


def test_the_launch_form_asks_to_accept_the_warnings(superuser_client) -> None:
    file = upload(CONTRADICTORY)
    url = reverse("admin:finetuning_file", args=[file.public_id])
    assert "Line 4: the same prompt as line 1" in superuser_client.get(url).content.decode()
    form = {"base_model": "tiny-llama", "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}

    refused = superuser_client.post(url, form)
    assert refused.status_code == 400 and "tick this to train on it anyway" in refused.content.decode()
    assert not FineTuningJob.objects.exists()

    assert superuser_client.post(url, {**form, "accept_warnings": "on"}).status_code == 302
    assert FineTuningJob.objects.count() == 1


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [("time_budget_seconds", "5", "between 10 and 86400"), ("max_epochs", "500", "between 1 and 200")],
)
def test_the_admin_form_names_a_budget_or_cap_out_of_range(superuser_client, shout_file, field, value, says) -> None:
    url = reverse("admin:finetuning_file", args=[shout_file.public_id])
    response = superuser_client.post(url, {"base_model": "tiny-llama", "n_epochs": "auto", "batch_size": "auto",
                                       "learning_rate_multiplier": "auto", field: value})
    assert response.status_code == 400
    assert f"{field} must be {says}" in response.context["form"].errors[field][0]


@pytest.mark.parametrize(("option", "value", "field"), [("--time-budget", "5", "time_budget_seconds"), ("--max-epochs", "0", "max_epochs")])
def test_the_command_names_a_budget_or_cap_out_of_range(tmp_path: Path, option: str, value: str, field: str) -> None:
    path = tmp_path / "codes.jsonl"
    path.write_bytes(jsonl(CODES))
    with pytest.raises(CommandError, match=f"^{field}: {field} must be between"):
        call_command("finetune", str(path), "--base", "tiny-llama", option, value, stdout=StringIO(), stderr=StringIO())


def test_the_command_says_why_training_stopped(tmp_path: Path) -> None:
    path = tmp_path / "codes.jsonl"
    path.write_bytes(jsonl(CODES))
    out = StringIO()
    call_command(
        "finetune", str(path), "--base", "tiny-llama", "--method", "full", "--batch-size", "3",
        "--learning-rate-multiplier", "50", "--validation-split", "0", "--seed", "1", "--max-epochs", "40",
        "--wait", "--worker-wait", "0", stdout=out, stderr=StringIO(),
    )
    job = FineTuningJob.objects.get()
    assert f"Training stopped: {job.stop_reason}; kept the weights of epoch {job.kept_epoch}." in out.getvalue()
    assert job.stop_reason.startswith("learnt 3/3 training examples")


def test_the_job_page_says_what_the_split_held_out_and_why(superuser_client, shout_file, shout_twice_file) -> None:
    once = job_for(shout_file, validation_split=0.25)
    twice = job_for(shout_twice_file, validation_split=0.25)

    assert once.validation_note.startswith("Nothing held out for validation: every completion appears only once")
    assert twice.validation_note.startswith("2 of 8 examples held out for validation, only from the 4 completions")
    page = superuser_client.get(reverse("admin:finetuning_finetuningjob_change", args=[once.public_id])).content.decode()
    assert "holding one out would test a fact the model was never shown" in page
