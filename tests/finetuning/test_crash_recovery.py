"""Jobs a crash left unfinished are recovered or failed, never left hanging.

A worker that dies mid-training, a server that stops while checking a job's files, and
a task lost between the job's commit and the queue: ``finetune_jobs_recover`` (run by
every process's reaper, the admin pages, the API and the task worker) settles each.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from finetuning import services
from finetuning.models import FineTuningJob
from finetuning.tasks import finetune_job_run

pytestmark = pytest.mark.django_db

Status = FineTuningJob.Status


def create(shout_file, *, enqueue: bool = False, minutes_ago: int = 10) -> FineTuningJob:
    """A queued job created ``minutes_ago`` (longer than FINETUNE_STALE_AFTER_SECONDS),
    with its task in the queue if ``enqueue`` (what the job's on-commit hook does)."""
    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False)
    FineTuningJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    if enqueue:
        finetune_job_run.enqueue(job_pk=job.pk)
    return job


def tasks_for(job: FineTuningJob) -> list[str]:
    return [task.status for task in DBTaskResult.objects.all() if task.args_kwargs["kwargs"] == {"job_pk": job.pk}]


def settled(job: FineTuningJob) -> FineTuningJob:
    return FineTuningJob.objects.get(pk=job.pk)


def test_a_job_stuck_validating_its_files_after_a_crash_fails_with_a_reason(shout_file) -> None:
    stuck, fresh = create(shout_file), create(shout_file, minutes_ago=0)
    FineTuningJob.objects.filter(pk__in=[stuck.pk, fresh.pk]).update(status=Status.VALIDATING_FILES)
    assert services.finetune_jobs_recover() == 1
    assert (settled(stuck).status, settled(stuck).error_code) == (Status.FAILED, "validation_interrupted")
    assert "retry the job" in settled(stuck).error_message
    assert settled(fresh).status == Status.VALIDATING_FILES, "a check still within its time is left alone"


def test_a_queued_job_whose_task_was_never_stored_is_queued_again(shout_file) -> None:
    lost = create(shout_file)  # as if the process stopped before the on-commit enqueue
    assert services.finetune_jobs_recover() == 1
    assert settled(lost).status == Status.QUEUED
    assert tasks_for(lost) == [TaskResultStatus.READY]
    assert services.REQUEUED in [event.message for event in lost.events.all()]
    assert services.finetune_jobs_recover() == 0, "a task waiting in the queue is alive"


def test_a_queued_job_whose_worker_died_before_claiming_it_is_queued_again(shout_file) -> None:
    job = create(shout_file, enqueue=True)
    DBTaskResult.objects.update(status=TaskResultStatus.RUNNING, started_at=timezone.now() - timedelta(minutes=9))
    assert services.finetune_jobs_recover() == 1
    assert sorted(tasks_for(job)) == [TaskResultStatus.READY, TaskResultStatus.RUNNING]


def test_a_job_waiting_its_turn_in_the_queue_is_left_alone(shout_file) -> None:
    waiting = create(shout_file, enqueue=True)
    taken = create(shout_file, enqueue=True)
    DBTaskResult.objects.filter(args_kwargs__kwargs__job_pk=taken.pk).update(
        status=TaskResultStatus.RUNNING, started_at=timezone.now()
    )
    assert services.finetune_jobs_recover() == 0
    assert settled(waiting).status == settled(taken).status == Status.QUEUED


def test_a_job_that_keeps_losing_its_task_fails(shout_file) -> None:
    job = create(shout_file)
    for _ in range(services.REQUEUE_LIMIT):
        assert services.finetune_jobs_recover() == 1
        DBTaskResult.objects.update(status=TaskResultStatus.FAILED)  # each try dies before claiming the job
    assert services.finetune_jobs_recover() == 1
    assert (settled(job).status, settled(job).error_code) == (Status.FAILED, "not_started")


def test_a_running_job_whose_worker_died_fails(shout_file) -> None:
    job = create(shout_file)
    assert services.job_claim(job=job, threads=1)
    FineTuningJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert services.finetune_jobs_recover() == 1
    assert (settled(job).status, settled(job).error_code) == (Status.FAILED, "worker_stopped")
