"""A training file whose stored data went missing (or cannot be read) at launch or before training.

Every launch path refuses it with a sentence naming the file and what is wrong, and
stores nothing: the service, the admin's launch form and retry button, and
``manage.py finetune``; a worker that finds the data gone fails the job with a reason.
The API's 400 is in tests/api/test_finetuning_api.py.
"""

from __future__ import annotations

import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils.html import escape
from django_tasks_db.models import DBTaskResult

from finetuning import runner, selectors, services
from finetuning.errors import FileUnavailable
from finetuning.models import FineTunedModel, FineTuningEvent, FineTuningJob, TrainingFile
from tests.finetuning.conftest import shout_pairs

pytestmark = pytest.mark.django_db

Status = FineTuningJob.Status


def lose_data(file: TrainingFile) -> None:
    Path(default_storage.path(file.stored_path)).unlink()


def put_a_folder_in_its_place(file: TrainingFile) -> None:
    path = Path(default_storage.path(file.stored_path))
    path.unlink()
    path.mkdir()


BREAKAGES = {"missing": (lose_data, "is missing"), "unreadable": (put_a_folder_in_its_place, "cannot be read")}


def untouched(file: TrainingFile) -> bool:
    stored = TrainingFile.objects.get(pk=file.pk)
    return (stored.status, stored.stats, stored.stored_path, stored.bytes) == (
        file.status,
        file.stats,
        file.stored_path,
        file.bytes,
    )


def assert_nothing_stored() -> None:
    assert not FineTuningJob.objects.exists()
    assert not FineTuningEvent.objects.exists()
    assert not DBTaskResult.objects.exists()


@pytest.fixture
def held_out_file(admin_user):
    return services.training_file_create(filename="held.jsonl", data=shout_pairs(["owl", "yak"]), created_by=admin_user)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_launch_names_the_training_file_and_what_is_wrong_and_stores_nothing(shout_file, breakage) -> None:
    breaks, problem = BREAKAGES[breakage]
    breaks(shout_file)
    with pytest.raises(FileUnavailable) as refused:
        services.finetune_job_create(training_file=shout_file, base_model="tiny-llama")
    assert refused.value.field == "training_file" and refused.value.code == "file_unavailable"
    message = str(refused.value)
    assert message.startswith(f"The training file shout.jsonl ({shout_file.public_id}) cannot be used: its data")
    assert shout_file.stored_path in message and problem in message
    assert_nothing_stored()
    assert untouched(shout_file)


def test_a_validation_file_without_its_data_is_named_as_such(shout_file, held_out_file) -> None:
    lose_data(held_out_file)
    with pytest.raises(FileUnavailable, match=re.escape("The validation file held.jsonl")) as refused:
        services.finetune_job_create(training_file=shout_file, validation_file=held_out_file, base_model="tiny-llama")
    assert refused.value.field == "validation_file"
    assert_nothing_stored()


def test_data_lost_between_the_check_and_the_read_fails_the_job_with_the_reason(shout_file, monkeypatch) -> None:
    monkeypatch.setattr(selectors, "training_file_check_readable", lambda **kwargs: None)
    lose_data(shout_file)
    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama")
    assert (job.status, job.error_code) == (Status.FAILED, "file_unavailable")
    assert "shout.jsonl" in job.error_message and "is missing" in job.error_message
    assert not DBTaskResult.objects.exists(), "a failed job is never queued"


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_worker_that_finds_the_data_gone_fails_the_job_with_the_file_named(shout_file, breakage) -> None:
    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False)
    breaks, problem = BREAKAGES[breakage]
    breaks(shout_file)
    assert runner.finetune_job_execute(job_pk=job.pk) == Status.FAILED
    job.refresh_from_db()
    assert job.error_code == "file_unavailable"
    assert job.error_message.startswith(f"The training file shout.jsonl ({shout_file.public_id}) cannot be used")
    assert problem in job.error_message
    last = job.events.last()
    assert last is not None and last.level == "error" and last.message == f"Failed: {job.error_message}"
    assert not job.metrics.exists() and not FineTunedModel.objects.exists()
    assert untouched(shout_file)


# --- The admin ------------------------------------------------------------------------


LAUNCH = {"base_model": "tiny-llama", "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}


def test_the_launch_form_shows_the_problem_instead_of_crashing(superuser_client, shout_file) -> None:
    put_a_folder_in_its_place(shout_file)
    response = superuser_client.post(reverse("admin:finetuning_file", args=[shout_file.public_id]), LAUNCH)
    page = response.content.decode()
    assert response.status_code == 400
    assert escape(f"The training file shout.jsonl ({shout_file.public_id}) cannot be used") in page
    assert "cannot be read (Is a directory)" in page
    assert "Launch fine-tuning" in page, "the form is shown again"
    assert_nothing_stored()
    assert untouched(shout_file)


def test_the_launch_form_puts_a_missing_validation_file_on_its_field(superuser_client, shout_file, held_out_file) -> None:
    lose_data(held_out_file)
    form = {**LAUNCH, "validation_file": held_out_file.public_id}
    response = superuser_client.post(reverse("admin:finetuning_file", args=[shout_file.public_id]), form)
    assert response.status_code == 400
    assert response.context["form"].errors["validation_file"] == [
        f"The validation file held.jsonl ({held_out_file.public_id}) cannot be used: its data "
        f"({held_out_file.stored_path} in the media storage) is missing. Restore it, or upload the data again as a new file."
    ]
    assert_nothing_stored()


def test_retrying_a_job_whose_data_is_gone_says_why_and_makes_no_job(superuser_client, shout_file) -> None:
    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False)
    services.job_fail(job=job, code="worker_stopped", message="The training worker stopped.")
    lose_data(shout_file)
    response = superuser_client.post(reverse("admin:finetuning_job_retry", args=[job.public_id]), follow=True)
    page = response.content.decode()
    assert escape(f"The training file shout.jsonl ({shout_file.public_id}) cannot be used") in page
    assert list(FineTuningJob.objects.values_list("pk", flat=True)) == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_stopped")


# --- manage.py finetune ---------------------------------------------------------------


def finetune(*args: str) -> None:
    call_command("finetune", *args, stdout=StringIO(), stderr=StringIO())


def test_the_command_names_a_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(CommandError, match=re.escape(f"Cannot read the training file {missing}: No such file")):
        finetune(str(missing), "--base", "tiny-llama")
    assert not TrainingFile.objects.exists()
    assert_nothing_stored()


def test_the_command_names_a_folder_given_as_the_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=re.escape(f"Cannot read the training file {tmp_path}: it is a folder.")):
        finetune(str(tmp_path), "--base", "tiny-llama")
    assert not TrainingFile.objects.exists()


def test_the_command_reports_stored_data_lost_before_the_launch(tmp_path: Path, monkeypatch) -> None:
    create = services.training_file_create

    def create_then_lose(**kwargs):
        file = create(**kwargs)
        shutil.rmtree(Path(default_storage.path(file.stored_path)).parent)  # e.g. the media folder was cleaned
        return file

    monkeypatch.setattr(services, "training_file_create", create_then_lose)
    path = tmp_path / "shout.jsonl"
    path.write_bytes(shout_pairs())
    with pytest.raises(CommandError, match=r"^training_file: The training file shout\.jsonl \(file-\w+\) cannot be"):
        finetune(str(path), "--base", "tiny-llama")
    assert_nothing_stored()
