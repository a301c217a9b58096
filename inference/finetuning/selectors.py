"""Reads for fine-tuning: files, jobs, their metrics and events, and the examples a job uses.

Fine-tuning is a team-admin feature: anyone allowed to fine-tune sees every job. The
``*_get`` functions raise ``Http404`` for an unknown public id.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from inference.engine.datasets import Example, split_validation
from inference.finetuning.validation import dataset_parse, rejection
from inference.models import FineTunedModel, FineTuningEvent, FineTuningJob, FineTuningMetric, TrainingFile


def training_file_get(*, file_id: str) -> TrainingFile:
    return get_object_or_404(TrainingFile, public_id=file_id)


def training_file_list() -> QuerySet[TrainingFile]:
    return TrainingFile.objects.select_related("created_by")


def training_file_read(*, file: TrainingFile) -> bytes:
    with default_storage.open(file.stored_path, "rb") as handle:
        return bytes(handle.read())


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


def finetuned_model_list(*, include_hidden: bool = True) -> QuerySet[FineTunedModel]:
    models = FineTunedModel.objects.select_related("job", "training_file")
    return models if include_hidden else models.filter(hidden=False)


def finetuned_model_get(*, model_id: str) -> FineTunedModel:
    return get_object_or_404(FineTunedModel, public_id=model_id)


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


def job_examples(*, job: FineTuningJob, base_source: str) -> JobExamples:
    """The training and held-out examples of ``job``, checked against ``base_source``.

    Raises ``DatasetRejected`` when a file does not fit that base model.
    """
    train = _examples(job.training_file, base_source)
    if job.validation_file is not None:
        return JobExamples(train, _examples(job.validation_file, base_source))
    if job.validation_split <= 0:
        return JobExamples(train, [])
    kept, held = split_validation(train, fraction=job.validation_split, seed=job.seed)
    return JobExamples(kept, held)


def _examples(file: TrainingFile, base_source: str) -> list[Example]:
    parsed = dataset_parse(data=training_file_read(file=file), base_source=base_source)
    if not parsed.ok:
        raise rejection(file.filename, parsed)
    return list(parsed.examples)
