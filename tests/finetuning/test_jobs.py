"""Jobs: creation with "auto" settings resolved, status moves, cancel, retry, dead workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from finetuning import runner, services
from finetuning.errors import FineTuningError, JobStateError
from finetuning.models import FineTuningJob
from inference.engine.datasets import resolve_hyperparameters

pytestmark = pytest.mark.django_db

Status = FineTuningJob.Status


def create(shout_file, **options):
    return services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False, **options)


def test_auto_settings_are_resolved_and_stored(shout_file) -> None:
    job = create(shout_file, validation_split=0.25, seed=7)
    assert job.public_id.startswith("ftjob-") and len(job.public_id) == 30
    assert job.status == Status.QUEUED
    assert job.hyperparameters_requested == {
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "time_budget_seconds": "auto",
        "max_epochs": "auto",
    }
    # 8 examples, each completion once: none is held out (it would test an unseen fact).
    # "auto" epochs train until the examples are learnt, within the budget and the cap.
    rule = resolve_hyperparameters(8)
    assert job.hyperparameters == {
        "n_epochs": "auto",
        "batch_size": rule.batch_size,
        "learning_rate_multiplier": rule.learning_rate_multiplier,
        "time_budget_seconds": settings.FINETUNE_TIME_BUDGET_SECONDS,
        "max_epochs": settings.FINETUNE_MAX_EPOCHS,
    }
    assert job.total_steps == rule.epochs * -(-8 // rule.batch_size)
    assert [e.message for e in job.events.all()][-1] == "Files validated: 8 training examples. Job queued."


def test_given_settings_are_kept(shout_file) -> None:
    job = create(shout_file, n_epochs=2, batch_size=4, learning_rate_multiplier=3, validation_split=0, suffix="Shouty")
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 3.0}
    assert (job.total_steps, job.suffix, job.validation_split) == (4, "shouty", 0.0)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"n_epochs": 0}, "n_epochs"),
        ({"time_budget_seconds": 5}, "time_budget_seconds"),
        ({"time_budget_seconds": 100_000}, "time_budget_seconds"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": 201}, "max_epochs"),
        ({"batch_size": "many"}, "batch_size"),
        ({"learning_rate_multiplier": -1}, "learning_rate_multiplier"),
        ({"base_model": "gpt-9"}, "model"),
        ({"suffix": "no spaces please"}, "suffix"),
        ({"validation_split": 0.9}, "validation_split"),
    ],
)
def test_bad_settings_name_their_field_and_store_nothing(shout_file, options, field) -> None:
    options = {"base_model": "tiny-llama", **options}
    with pytest.raises(FineTuningError) as refused:
        services.finetune_job_create(training_file=shout_file, enqueue=False, **options)
    assert refused.value.field == field
    assert str(refused.value)
    assert FineTuningJob.objects.count() == 0


def test_a_created_job_is_queued_for_the_worker(shout_file, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama")
    task = DBTaskResult.objects.get()
    assert task.task_path == "finetuning.tasks.finetune_job_run"
    assert task.args_kwargs["kwargs"] == {"job_pk": job.pk}


def test_a_queued_job_can_be_cancelled_and_is_then_never_trained(shout_file) -> None:
    job = services.finetune_job_cancel(job=create(shout_file))
    assert job.status == Status.CANCELLED and job.finished_at is not None
    assert runner.finetune_job_execute(job_pk=job.pk) == "cancelled"
    assert job.events.last().message == "The job was cancelled."


def test_a_finished_job_cannot_be_cancelled(shout_file) -> None:
    job = create(shout_file)
    services.job_fail(job=job, code="training_failed", message="Training failed: boom")
    with pytest.raises(JobStateError, match="has already failed"):
        services.finetune_job_cancel(job=job)
    job.refresh_from_db()
    assert (job.status, job.error_message) == (Status.FAILED, "Training failed: boom")


def test_a_failed_job_is_retried_with_the_same_settings(shout_file, admin_user) -> None:
    job = create(shout_file, n_epochs=2, seed=5, suffix="again", validation_split=0.25)
    services.job_fail(job=job, code="worker_stopped", message="The training worker stopped.")
    retry = services.finetune_job_retry(job=job, created_by=admin_user)
    assert retry.pk != job.pk and retry.status == Status.QUEUED
    assert retry.retried_from == job
    same = (
        "training_file_id",
        "base_model",
        "hyperparameters_requested",
        "hyperparameters",
        "seed",
        "suffix",
        "validation_split",
    )
    assert [getattr(retry, f) for f in same] == [getattr(job, f) for f in same]


def test_only_failed_or_cancelled_jobs_can_be_retried(shout_file) -> None:
    with pytest.raises(JobStateError, match="Only a failed or cancelled job"):
        services.finetune_job_retry(job=create(shout_file))


def test_a_running_job_whose_worker_died_is_marked_failed(shout_file) -> None:
    dead, alive = create(shout_file), create(shout_file)
    for job in (dead, alive):
        assert services.job_claim(job=job, threads=1)
    FineTuningJob.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert services.finetune_jobs_fail_stale() == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.error_code, dead.error_message) == (
        Status.FAILED,
        "worker_stopped",
        "The training worker stopped.",
    )
    assert alive.status == Status.RUNNING


def test_a_job_is_claimed_once(shout_file) -> None:
    job = create(shout_file)
    assert services.job_claim(job=job, threads=1)
    assert not services.job_claim(job=FineTuningJob.objects.get(pk=job.pk), threads=1)
    assert runner.finetune_job_execute(job_pk=job.pk) == "running"  # another worker has it: left alone
