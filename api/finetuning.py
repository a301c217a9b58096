"""Files and fine-tuning jobs for /v1/, on the same services as the admin.

This module turns API requests into calls of ``finetuning.services`` and
``selectors`` and their results into OpenAI's object shapes (``file``,
``fine_tuning.job``, ``fine_tuning.job.event``, ``fine_tuning.job.checkpoint``).
Who may use it follows the admin's rule (``can_finetune``); anyone allowed sees the
team's files and jobs, as in the admin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.http import Http404

from api import responses
from api.errors import ApiError, invalid, not_found
from api.schemas import CreateFineTuningJobRequest, validate_body
from finetuning import selectors, services
from finetuning.errors import DatasetRejected, FineTuningError
from finetuning.models import FineTuningEvent, FineTuningJob, TrainingFile
from finetuning.views import can_finetune


def _time(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def permission_check(*, user: User) -> None:
    if not can_finetune(user):
        raise ApiError(
            403,
            "Fine-tuning needs the “Can fine-tune models” permission (and staff status); ask an admin for it.",
            code="permission_denied",
        )


def service_error(exc: FineTuningError) -> ApiError:
    """The API's view of a refusal from the fine-tuning services."""
    if isinstance(exc, DatasetRejected):
        problems = "; ".join(exc.problems) + (f"; and {exc.more} more" if exc.more else "")
        return invalid(exc.field or "file", f"{exc} {problems}".strip(), code="invalid_file")
    status = 404 if exc.code == "model_not_found" else 400
    return ApiError(status, str(exc), param=exc.field, code=exc.code)


# --- Files ---------------------------------------------------------------------------


def file_object(file: TrainingFile) -> dict[str, Any]:
    return responses.File.model_validate(
        {
            "id": file.public_id,
            "bytes": file.bytes,
            "created_at": _time(file.created_at),
            "filename": file.filename,
            "purpose": file.purpose,
            "status": file.status,
        }
    ).model_dump()


def file_upload(*, user: User, upload: UploadedFile | None, purpose: object) -> dict[str, Any]:
    if purpose is None or purpose == "":
        raise invalid("purpose", "'purpose' is required: send purpose=fine-tune.")
    if upload is None:
        raise invalid("file", "'file' is required: upload the training data as a multipart file field.")
    limit = settings.FINETUNE_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise ApiError(413, f"The file is larger than the limit of {limit:,} bytes.", param="file")
    try:
        file = services.training_file_create(
            filename=upload.name or "upload", data=upload.read(), created_by=user, purpose=str(purpose)
        )
    except FineTuningError as exc:
        raise service_error(exc) from exc
    return file_object(file)


def file_get(*, file_id: str, param: str | None = None) -> TrainingFile:
    try:
        return selectors.training_file_get(file_id=file_id)
    except Http404:
        raise not_found(f"No file with id {file_id!r}.", param=param, code="file_not_found") from None


def file_list() -> dict[str, Any]:
    files = [file_object(file) for file in selectors.training_file_list()]
    return responses.FileList.model_validate({"data": files, "has_more": False}).model_dump()


def file_delete(*, file_id: str) -> dict[str, Any]:
    file = file_get(file_id=file_id)
    try:
        services.training_file_delete(file=file)
    except FineTuningError as exc:
        raise service_error(exc) from exc
    return responses.DeletedFile(id=file_id, deleted=True).model_dump()


# --- Jobs ----------------------------------------------------------------------------


def job_object(job: FineTuningJob) -> dict[str, Any]:
    hyperparameters = job.hyperparameters or job.hyperparameters_requested
    error = None
    if job.status == FineTuningJob.Status.FAILED:
        error = {"code": job.error_code or "failed", "message": job.error_message, "param": None}
    estimated = None
    if job.eta_seconds is not None and not job.is_finished and job.started_at is not None:
        estimated = int(datetime.now().timestamp() + job.eta_seconds)
    return responses.FineTuningJob.model_validate(
        {
            "id": job.public_id,
            "created_at": _time(job.created_at),
            "finished_at": _time(job.finished_at),
            "model": job.base_model,
            "fine_tuned_model": job.fine_tuned_model or None,
            "status": job.status,
            "hyperparameters": hyperparameters,
            "method": {"supervised": {"hyperparameters": hyperparameters}},
            "training_type": {"type": job.method},
            "training_file": job.training_file.public_id,
            "validation_file": job.validation_file.public_id if job.validation_file else None,
            "trained_tokens": job.trained_tokens,
            "error": error,
            "seed": job.seed,
            "estimated_finish": estimated,
            "user_provided_suffix": job.suffix or None,
            "stop_reason": job.stop_reason or None,
            "kept_epoch": job.kept_epoch,
        }
    ).model_dump()


def _job_arguments(body: dict[str, Any]) -> dict[str, Any]:
    job = validate_body(CreateFineTuningJobRequest, body)
    return {
        "base_model": job.model,
        "training_file": file_get(file_id=job.training_file, param="training_file"),
        "validation_file": file_get(file_id=job.validation_file, param="validation_file")
        if job.validation_file
        else None,
        "seed": job.seed,
        "suffix": job.suffix or "",
        "method": job.chosen_training_type(),
        **job.chosen_hyperparameters(),
    }


def job_create(*, user: User, body: dict[str, Any]) -> dict[str, Any]:
    arguments = _job_arguments(body)
    try:
        job = services.finetune_job_create(created_by=user, **arguments)
    except FineTuningError as exc:
        raise service_error(exc) from exc
    return job_object(job)


def job_get(*, job_id: str) -> FineTuningJob:
    """The job as it stands: one whose worker died reads as failed here, as in the admin."""
    services.finetune_jobs_recover()
    try:
        return selectors.job_get(job_id=job_id)
    except Http404:
        raise not_found(f"No fine-tuning job with id {job_id!r}.", code="job_not_found") from None


def _page(
    items: list[dict[str, Any]], *, shape: type[responses.ResponseBody], after: str | None, limit: int
) -> dict[str, Any]:
    """One page of ``items`` as a ``shape`` (a list object), starting after the id ``after``."""
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return shape.model_validate({"data": items[:limit], "has_more": len(items) > limit}).model_dump()


def page_limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise invalid("limit", "'limit' must be a whole number from 1 to 100.")
    return int(raw)


def job_list(*, after: str | None, limit: int) -> dict[str, Any]:
    services.finetune_jobs_recover()
    jobs = [job_object(job) for job in selectors.job_list()]
    return _page(jobs, shape=responses.FineTuningJobList, after=after, limit=limit)


def job_cancel(*, job_id: str) -> dict[str, Any]:
    job = job_get(job_id=job_id)
    try:
        services.finetune_job_cancel(job=job)
    except FineTuningError as exc:
        raise service_error(exc) from exc
    return job_object(job_get(job_id=job_id))


def event_object(job: FineTuningJob, event: FineTuningEvent) -> dict[str, Any]:
    return responses.FineTuningJobEvent.model_validate(
        {
            "id": f"ftevent-{job.public_id.removeprefix('ftjob-')}-{event.pk}",
            "created_at": _time(event.created_at),
            "level": event.level,
            "message": event.message,
        }
    ).model_dump()


def job_events(*, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
    job = job_get(job_id=job_id)
    events = [event_object(job, event) for event in selectors.job_events(job=job)]
    return _page(events, shape=responses.FineTuningJobEventList, after=after, limit=limit)


def job_checkpoints(*, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
    """The succeeded job's model, with its last epoch's figures.

    Parley keeps only the final adapter of a job, so a job has at most one checkpoint.
    """
    job = job_get(job_id=job_id)
    rows = selectors.job_epoch_rows(job=job)
    if job.status != FineTuningJob.Status.SUCCEEDED or not job.fine_tuned_model:
        return _page([], shape=responses.FineTuningJobCheckpointList, after=after, limit=limit)
    last = rows[-1] if rows else None
    metrics = {
        "step": last.step if last else job.step,
        "train_loss": last.epoch_train_loss if last else None,
        "valid_loss": last.val_loss if last else None,
        "valid_mean_token_accuracy": last.val_token_accuracy if last else None,
    }
    checkpoint = responses.FineTuningJobCheckpoint.model_validate(
        {
            "id": f"ftckpt-{job.public_id.removeprefix('ftjob-')}",
            "created_at": _time(job.finished_at),
            "fine_tuned_model_checkpoint": job.fine_tuned_model,
            "fine_tuning_job_id": job.public_id,
            "step_number": metrics["step"],
            "metrics": metrics,
        }
    ).model_dump()
    return _page([checkpoint], shape=responses.FineTuningJobCheckpointList, after=after, limit=limit)
