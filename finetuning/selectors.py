"""Reads for fine-tuning: files, jobs, their metrics and events, and the examples a job uses.

Fine-tuning is a team-admin feature: anyone allowed to fine-tune sees every job. The
``*_get`` functions raise ``Http404`` for an unknown public id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, cast

from django.apps import apps
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from finetuning.errors import FileUnavailable
from finetuning.models import FineTunedModel, FineTuningEvent, FineTuningJob, FineTuningMetric, TrainingFile
from finetuning.validation import dataset_parse, rejection
from inference.engine.datasets import Example, split_note, split_validation

if TYPE_CHECKING:
    from django_tasks.base import Task

    from finetuning.apps import FinetuningConfig


def training_file_get(*, file_id: str) -> TrainingFile:
    return get_object_or_404(TrainingFile, public_id=file_id)


def training_file_list() -> QuerySet[TrainingFile]:
    return TrainingFile.objects.select_related("created_by")


def training_file_read(*, file: TrainingFile, field: str = "file") -> bytes:
    """The stored data of ``file``.

    Raises ``FileUnavailable`` (naming ``field``, the file and what is wrong) when the
    data is missing from the media storage or cannot be read.
    """
    with _stored_data(file, field) as handle:
        return bytes(handle.read())


def training_file_check_readable(*, file: TrainingFile, field: str = "file") -> None:
    """Raise ``FileUnavailable`` unless the stored data of ``file`` can be opened and read."""
    with _stored_data(file, field) as handle:
        handle.read(1)


@contextmanager
def _stored_data(file: TrainingFile, field: str) -> Iterator[IO[bytes]]:
    try:
        if not file.stored_path:
            raise FileNotFoundError
        with default_storage.open(file.stored_path, "rb") as handle:
            yield handle
    except FileNotFoundError:
        raise _unavailable(file, field, "is missing") from None
    except (OSError, SuspiciousFileOperation) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise _unavailable(file, field, f"cannot be read ({reason})") from None


def _unavailable(file: TrainingFile, field: str, problem: str) -> FileUnavailable:
    kind = {"training_file": "training file", "validation_file": "validation file"}.get(field, "file")
    where = f"{file.stored_path} in the media storage" if file.stored_path else "no path recorded"
    return FileUnavailable(
        f"The {kind} {file.filename} ({file.public_id}) cannot be used: its data ({where}) {problem}. "
        "Restore it, or upload the data again as a new file.",
        field=field,
    )


def job_get(*, job_id: str) -> FineTuningJob:
    return get_object_or_404(FineTuningJob.objects.select_related("training_file", "validation_file"), public_id=job_id)


def job_list() -> QuerySet[FineTuningJob]:
    return FineTuningJob.objects.select_related("training_file", "created_by")


def job_events(*, job: FineTuningJob, limit: int = 200) -> list[FineTuningEvent]:
    """The latest ``limit`` events, newest first."""
    return list(job.events.order_by("-created_at", "-pk")[:limit])


def job_metrics(*, job: FineTuningJob) -> QuerySet[FineTuningMetric]:
    return job.metrics.order_by("step")


def job_epoch_rows(*, job: FineTuningJob) -> list[FineTuningMetric]:
    """One row per finished epoch: its training loss, validation loss and token accuracy."""
    return list(job.metrics.filter(epoch_train_loss__isnull=False).order_by("epoch"))


def jobs_queued_without_a_task(*, since: datetime) -> list[FineTuningJob]:
    """Jobs queued before ``since`` that no task will ever run: the task was never
    stored (the process stopped before its transaction's on-commit hook), it ended
    without claiming the job, or a worker took it at or before ``since`` and died before
    claiming. A task still waiting in the queue is alive, however long it waits.

    Only the database task backend can be asked; with any other every job counts as alive.
    """
    if settings.TASKS["default"]["BACKEND"] != "django_tasks_db.DatabaseBackend":
        return []
    queued = list(FineTuningJob.objects.filter(status=FineTuningJob.Status.QUEUED, created_at__lt=since))
    if not queued:
        return []
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    task = job_task()
    alive = DBTaskResult.objects.filter(task_path=task.module_path).filter(
        Q(status=TaskResultStatus.READY) | Q(status=TaskResultStatus.RUNNING, started_at__gt=since)
    )
    taken = {task.get("kwargs", {}).get("job_pk") for task in alive.values_list("args_kwargs", flat=True)}
    return [job for job in queued if job.pk not in taken]


def job_task() -> Task[..., str]:
    """The task that runs a job (``finetuning.tasks``), looked up on the app's config:
    the tasks module imports the services, which enqueue it."""
    return cast("FinetuningConfig", apps.get_app_config("finetuning")).job_task


def finetuned_model_list(*, include_hidden: bool = True) -> QuerySet[FineTunedModel]:
    models = FineTunedModel.objects.select_related("job", "training_file")
    return models if include_hidden else models.filter(hidden=False)


def finetuned_model_get(*, model_id: str) -> FineTunedModel:
    return get_object_or_404(FineTunedModel, public_id=model_id)


def finetuned_model_dependents(*, model: FineTunedModel) -> list[str]:
    """Ids of the LoRA models that run on ``model``'s weights (a full model's only)."""
    return list(FineTunedModel.objects.filter(base_model=model.public_id).values_list("public_id", flat=True))


def training_tokens_per_second() -> float:
    """The training speed measured by the latest succeeded job, or the configured guess."""
    measured = (
        FineTuningJob.objects.filter(status=FineTuningJob.Status.SUCCEEDED, tokens_per_second__isnull=False)
        .order_by("-finished_at")
        .values_list("tokens_per_second", flat=True)
        .first()
    )
    return float(measured or settings.FINETUNE_TOKENS_PER_SECOND)


@dataclass(frozen=True)
class JobExamples:
    train: list[Example]
    validation: list[Example]
    split_note: str = ""  # what the automatic split held out and why; "" without one


def job_examples(*, job: FineTuningJob, base_source: str) -> JobExamples:
    """The training and held-out examples of ``job``, checked against ``base_source``.

    Raises ``DatasetRejected`` when a file does not fit that base model, and
    ``FileUnavailable`` when a file's stored data is missing or unreadable.
    """
    train = _examples(job.training_file, base_source, "training_file")
    if job.validation_file is not None:
        return JobExamples(train, _examples(job.validation_file, base_source, "validation_file"))
    if job.validation_split <= 0:
        return JobExamples(train, [])
    kept, held = split_validation(train, fraction=job.validation_split, seed=job.seed)
    return JobExamples(kept, held, split_note(train, held))


def _examples(file: TrainingFile, base_source: str, field: str) -> list[Example]:
    parsed = dataset_parse(data=training_file_read(file=file, field=field), base_source=base_source)
    if not parsed.ok:
        raise rejection(file.filename, parsed)
    return list(parsed.examples)
