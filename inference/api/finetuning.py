"""Files and fine-tuning jobs for /v1/, on the same services as the admin.

This module turns API requests into calls of ``inference.finetuning.services`` and
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

from inference.api.errors import ApiError, invalid, not_found
from inference.finetuning import selectors, services
from inference.finetuning.errors import DatasetRejected, FineTuningError
from inference.finetuning.views import can_finetune
from inference.models import FineTuningEvent, FineTuningJob, TrainingFile

JOB_FIELDS = {"model", "training_file", "validation_file", "hyperparameters", "method", "seed", "suffix"}
IGNORED_JOB_FIELDS = {"integrations", "metadata"}
# Parley's extension, in the shape other OpenAI-style services use for it:
# "training_type": {"type": "lora"} or {"type": "full"} (or just the string).
TRAINING_TYPE = "training_type"
TRAINING_TYPES = ("lora", "full")


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
    return {
        "id": file.public_id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": _time(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": file.status,
        "status_details": None,
    }


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
    return {"object": "list", "data": files, "has_more": False}


def file_delete(*, file_id: str) -> dict[str, Any]:
    file = file_get(file_id=file_id)
    try:
        services.training_file_delete(file=file)
    except FineTuningError as exc:
        raise service_error(exc) from exc
    return {"id": file_id, "object": "file", "deleted": True}


# --- Jobs ----------------------------------------------------------------------------


def job_object(job: FineTuningJob) -> dict[str, Any]:
    hyperparameters = job.hyperparameters or job.hyperparameters_requested
    error = None
    if job.status == FineTuningJob.Status.FAILED:
        error = {"code": job.error_code or "failed", "message": job.error_message, "param": None}
    estimated = None
    if job.eta_seconds is not None and not job.is_finished and job.started_at is not None:
        estimated = int(datetime.now().timestamp() + job.eta_seconds)
    return {
        "id": job.public_id,
        "object": "fine_tuning.job",
        "created_at": _time(job.created_at),
        "finished_at": _time(job.finished_at),
        "model": job.base_model,
        "fine_tuned_model": job.fine_tuned_model or None,
        "organization_id": "parley",
        "status": job.status,
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        TRAINING_TYPE: {"type": job.method},
        "training_file": job.training_file.public_id,
        "validation_file": job.validation_file.public_id if job.validation_file else None,
        "result_files": [],
        "trained_tokens": job.trained_tokens,
        "error": error,
        "seed": job.seed,
        "estimated_finish": estimated,
        "integrations": [],
        "user_provided_suffix": job.suffix or None,
        "metadata": None,
        "stop_reason": job.stop_reason or None,
        "kept_epoch": job.kept_epoch,
    }


# OpenAI's three, then Parley's bounds on "auto" epochs.
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "time_budget_seconds", "max_epochs")


def _hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    method = body.get("method")
    chosen = body.get("hyperparameters")
    if method is not None:
        if not isinstance(method, dict) or method.get("type", "supervised") != "supervised":
            raise invalid("method", 'Only supervised fine-tuning is available: send {"type": "supervised"}.')
        supervised = method.get("supervised") or {}
        chosen = supervised.get("hyperparameters") if isinstance(supervised, dict) else None
    chosen = chosen or {}
    if not isinstance(chosen, dict):
        raise invalid("hyperparameters", "'hyperparameters' must be an object.")
    unknown = set(chosen) - set(HYPERPARAMETERS)
    if unknown:
        raise invalid(f"hyperparameters.{sorted(unknown)[0]}", f"Unknown hyperparameter {sorted(unknown)[0]!r}.")
    return {name: chosen.get(name, "auto") for name in HYPERPARAMETERS}


def _training_type(body: dict[str, Any]) -> str | None:
    """The method (lora or full) that ``training_type`` asks for; None: FINETUNE_METHOD."""
    chosen = body.get(TRAINING_TYPE)
    if isinstance(chosen, dict):
        unknown = sorted(set(chosen) - {"type"})
        if unknown:
            raise invalid(
                f"{TRAINING_TYPE}.{unknown[0]}", f'Unknown training_type setting {unknown[0]!r}; only "type".'
            )
        chosen = chosen.get("type")
    if chosen is None:
        return None
    if not isinstance(chosen, str) or chosen.lower() not in TRAINING_TYPES:
        raise invalid(TRAINING_TYPE, """'training_type' must be {"type": "lora"} or {"type": "full"}.""")
    return chosen.lower()


def _job_arguments(body: dict[str, Any]) -> dict[str, Any]:
    for name in body:
        if name not in JOB_FIELDS | IGNORED_JOB_FIELDS | {TRAINING_TYPE}:
            raise invalid(name, f"Unrecognized request argument supplied: {name}.", code="unknown_parameter")
    for name in ("model", "training_file"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise invalid(name, f"'{name}' is required.")
    seed, suffix = body.get("seed"), body.get("suffix")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**31 - 1):
        raise invalid("seed", "'seed' must be a whole number from 0 to 2147483647.")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid("suffix", "'suffix' must be a string.")
    validation = body.get("validation_file")
    if validation is not None and not isinstance(validation, str):
        raise invalid("validation_file", "'validation_file' must be a file id.")
    return {
        "base_model": body["model"],
        "training_file": file_get(file_id=body["training_file"], param="training_file"),
        "validation_file": file_get(file_id=validation, param="validation_file") if validation else None,
        "seed": seed,
        "suffix": suffix or "",
        "method": _training_type(body),
        **_hyperparameters(body),
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


def _page(items: list[dict[str, Any]], *, after: str | None, limit: int) -> dict[str, Any]:
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def page_limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise invalid("limit", "'limit' must be a whole number from 1 to 100.")
    return int(raw)


def job_list(*, after: str | None, limit: int) -> dict[str, Any]:
    services.finetune_jobs_recover()
    return _page([job_object(job) for job in selectors.job_list()], after=after, limit=limit)


def job_cancel(*, job_id: str) -> dict[str, Any]:
    job = job_get(job_id=job_id)
    try:
        services.finetune_job_cancel(job=job)
    except FineTuningError as exc:
        raise service_error(exc) from exc
    return job_object(job_get(job_id=job_id))


def event_object(job: FineTuningJob, event: FineTuningEvent) -> dict[str, Any]:
    return {
        "id": f"ftevent-{job.public_id.removeprefix('ftjob-')}-{event.pk}",
        "object": "fine_tuning.job.event",
        "created_at": _time(event.created_at),
        "level": event.level,
        "message": event.message,
        "type": "message",
        "data": None,
    }


def job_events(*, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
    job = job_get(job_id=job_id)
    events = [event_object(job, event) for event in selectors.job_events(job=job)]
    return _page(events, after=after, limit=limit)


def job_checkpoints(*, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
    """The succeeded job's model, with its last epoch's figures.

    Parley keeps only the final adapter of a job, so a job has at most one checkpoint.
    """
    job = job_get(job_id=job_id)
    rows = selectors.job_epoch_rows(job=job)
    if job.status != FineTuningJob.Status.SUCCEEDED or not job.fine_tuned_model:
        return _page([], after=after, limit=limit)
    last = rows[-1] if rows else None
    metrics = {
        "step": last.step if last else job.step,
        "train_loss": last.epoch_train_loss if last else None,
        "valid_loss": last.val_loss if last else None,
        "valid_mean_token_accuracy": last.val_token_accuracy if last else None,
    }
    checkpoint = {
        "id": f"ftckpt-{job.public_id.removeprefix('ftjob-')}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": _time(job.finished_at),
        "fine_tuned_model_checkpoint": job.fine_tuned_model,
        "fine_tuning_job_id": job.public_id,
        "step_number": metrics["step"],
        "metrics": metrics,
    }
    return _page([checkpoint], after=after, limit=limit)
