"""Writes for fine-tuning: training files, jobs and their lifecycle, fine-tuned models.

The admin pages, ``manage.py finetune`` and the OpenAI-compatible API all call these.
Arguments are keyword-only; refusals raise ``errors.FineTuningError`` (with a field
name and a sentence) and store nothing. Job status only moves forward:

    validating_files -> queued -> running -> succeeded | failed | cancelled

and every move is a conditional update on the current status, so a cancel racing
the worker, or two workers racing for one job, cannot both win.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from finetuning import bases, selectors
from finetuning.errors import DatasetRejected, FileUnavailable, FineTuningError, JobStateError
from finetuning.models import (
    FineTunedModel,
    FineTuningEvent,
    FineTuningJob,
    FineTuningMetric,
    TrainingFile,
    new_file_id,
)
from finetuning.validation import dataset_parse, rejection
from inference import registry
from inference.engine.datasets import DatasetStats, resolve_hyperparameters

logger = logging.getLogger(__name__)

Auto = Literal["auto"]
Job = FineTuningJob
SUFFIX_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
EXTENSIONS = {"csv": "csv", "chat": "jsonl", "prompt_completion": "jsonl"}


# --- Training files -----------------------------------------------------------------


def training_file_create(
    *, filename: str, data: bytes, created_by: User | None = None, purpose: str = "fine-tune"
) -> TrainingFile:
    """Validate an uploaded dataset and store it; a file with problems is refused.

    Raises ``DatasetRejected`` (``problems``: "Line N: reason", at most
    FINETUNE_MAX_ERRORS_SHOWN, ``more``: how many were left out) and stores nothing.
    The file is measured with the default model's tokenizer and context length.
    """
    if purpose != "fine-tune":
        raise FineTuningError(f'Purpose must be "fine-tune", not "{purpose}".', field="purpose")
    parsed = dataset_parse(
        data=data,
        base_source=registry.base_models()[0].base_source,
        tokens_per_second=selectors.training_tokens_per_second(),
    )
    if not parsed.ok:
        raise rejection(filename, parsed)
    assert parsed.format is not None
    public_id = new_file_id()
    stored = default_storage.save(f"finetuning/files/{public_id}.{EXTENSIONS[parsed.format]}", ContentFile(data))
    return TrainingFile.objects.create(
        public_id=public_id,
        filename=Path(filename).name[:255] or "upload",
        purpose=purpose,
        bytes=len(data),
        format=parsed.format,
        status=TrainingFile.Status.PROCESSED,
        stored_path=stored,
        stats={**stats_as_json(parsed.stats), "warnings": [str(w) for w in parsed.warnings]},
        created_by=created_by,
    )


def training_file_delete(*, file: TrainingFile) -> None:
    """Delete a training file and its stored data; a file a job used is kept (jobs need it)."""
    if file.training_jobs.exists() or file.validation_jobs.exists():
        raise FineTuningError(
            f"The file {file.public_id} is used by a fine-tuning job and cannot be deleted.",
            field="file_id",
            code="file_in_use",
        )
    stored = file.stored_path
    file.delete()
    if stored:
        default_storage.delete(stored)


def stats_as_json(stats: DatasetStats) -> dict[str, Any]:
    data = asdict(stats)
    hyper = data.pop("hyperparameters")
    data["auto_hyperparameters"] = {
        "n_epochs": hyper["epochs"],
        "batch_size": hyper["batch_size"],
        "learning_rate_multiplier": hyper["learning_rate_multiplier"],
    }
    return data


# --- Jobs ---------------------------------------------------------------------------


def finetune_job_create(
    *,
    training_file: TrainingFile,
    base_model: str,
    n_epochs: int | Auto = "auto",
    batch_size: int | Auto = "auto",
    learning_rate_multiplier: float | Auto = "auto",
    time_budget_seconds: int | Auto = "auto",
    max_epochs: int | Auto = "auto",
    validation_file: TrainingFile | None = None,
    validation_split: float | None = None,
    seed: int | None = None,
    suffix: str = "",
    method: str | None = None,
    created_by: User | None = None,
    enqueue: bool = True,
) -> FineTuningJob:
    """Create a job, check its files against the base model, resolve "auto", queue it.

    Bad arguments raise ``FineTuningError`` naming the field and store nothing; so
    does a file whose stored data is missing or unreadable (``FileUnavailable``, on
    "training_file" or "validation_file"). Files that do not fit the chosen base (too
    long for its context...) give a job that failed with
    ``error_code="invalid_training_file"``, as OpenAI's API does. With ``enqueue``
    the training task is queued once the transaction commits. ``n_epochs="auto"``
    trains until the examples are learnt, within ``time_budget_seconds`` and
    ``max_epochs`` ("auto": FINETUNE_TIME_BUDGET_SECONDS and FINETUNE_MAX_EPOCHS).
    """
    requested = _check_hyperparameters(n_epochs, batch_size, learning_rate_multiplier)
    requested |= _check_stopping(time_budget_seconds, max_epochs)
    base = _check_base(base_model)
    split = _check_split(validation_file, validation_split)
    _check_files(training_file, validation_file)
    suffix = _check_suffix(suffix)
    job = FineTuningJob.objects.create(
        base_model=base.model_id,
        training_file=training_file,
        validation_file=validation_file,
        validation_split=split,
        hyperparameters_requested=requested,
        method=_check_method(method),
        seed=secrets_seed() if seed is None else int(seed),
        suffix=suffix,
        created_by=created_by,
    )
    event_add(job=job, message=f"Created fine-tuning job {job.public_id} on {base.model_id}.")
    _validate_and_queue(job, base, enqueue=enqueue)
    job.refresh_from_db()
    return job


def secrets_seed() -> int:
    import secrets

    return secrets.randbelow(2**31)


# What a job may ask for (the stopping rule's bounds are settings: FINETUNE_*_RANGE).
N_EPOCHS_RANGE = (1, 50)
BATCH_SIZE_RANGE = (1, 256)
LEARNING_RATE_MULTIPLIER_RANGE = (0.001, 50.0)


def _check_hyperparameters(n_epochs: Any, batch_size: Any, multiplier: Any) -> dict[str, Any]:
    return {
        "n_epochs": _auto_or_number(n_epochs, "n_epochs", int, *N_EPOCHS_RANGE),
        "batch_size": _auto_or_number(batch_size, "batch_size", int, *BATCH_SIZE_RANGE),
        "learning_rate_multiplier": _auto_or_number(
            multiplier, "learning_rate_multiplier", float, *LEARNING_RATE_MULTIPLIER_RANGE
        ),
    }


def _check_stopping(budget: Any, cap: Any) -> dict[str, Any]:
    low, high = settings.FINETUNE_BUDGET_RANGE
    first, last = settings.FINETUNE_MAX_EPOCHS_RANGE
    return {
        "time_budget_seconds": _auto_or_number(budget, "time_budget_seconds", int, low, high),
        "max_epochs": _auto_or_number(cap, "max_epochs", int, first, last),
    }


def _auto_or_number(value: Any, field: str, kind: type, low: float, high: float) -> Any:
    if value in ("auto", None, ""):
        return "auto"
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise FineTuningError(f'{field} must be "auto" or a number, not {value!r}.', field=field) from None
    if not low <= number <= high:
        raise FineTuningError(f"{field} must be between {low:g} and {high:g}, not {number}.", field=field)
    return number


def _check_base(model_id: str) -> bases.TrainingBase:
    base = bases.training_base(model_id)
    if base is None:
        raise FineTuningError(f'There is no model "{model_id}" to fine-tune.', field="model", code="model_not_found")
    return base


def _check_split(validation_file: TrainingFile | None, split: float | None) -> float:
    if validation_file is not None:
        return 0.0
    value = settings.FINETUNE_DEFAULT_VALIDATION_SPLIT if split is None else float(split)
    if not 0.0 <= value <= 0.5:
        raise FineTuningError(
            f"The validation split must be between 0 and 0.5, not {value:g}.", field="validation_split"
        )
    return value


def _check_files(training: TrainingFile, validation: TrainingFile | None) -> None:
    for field, file in (("training_file", training), ("validation_file", validation)):
        if file is not None and file.status != TrainingFile.Status.PROCESSED:
            raise FineTuningError(f"The file {file.public_id} is not ready ({file.status}).", field=field)
    if validation is not None and validation.pk == training.pk:
        raise FineTuningError("The validation file must differ from the training file.", field="validation_file")
    for field, file in (("training_file", training), ("validation_file", validation)):
        if file is not None:
            selectors.training_file_check_readable(file=file, field=field)


def _check_suffix(suffix: str) -> str:
    suffix = (suffix or "").strip().lower()
    if suffix and not SUFFIX_PATTERN.match(suffix):
        raise FineTuningError(
            "The suffix may hold up to 40 lowercase letters, digits and hyphens, starting with a letter or digit.",
            field="suffix",
        )
    return suffix


def _check_method(method: str | None) -> str:
    method = method or settings.FINETUNE_METHOD
    if method not in ("lora", "full"):
        raise FineTuningError(f'The method must be "lora" or "full", not "{method}".', field="method")
    return method


def _validate_and_queue(job: FineTuningJob, base: bases.TrainingBase, *, enqueue: bool) -> None:
    """validating_files -> queued (hyperparameters resolved) or -> failed with the reasons."""
    try:
        examples = selectors.job_examples(job=job, base_source=base.base_source)
    except DatasetRejected as exc:
        lines = "; ".join(exc.problems[:5])
        job_fail(job=job, code="invalid_training_file", message=f"{exc} {lines}".strip())
        return
    except FileUnavailable as exc:  # the data went away since _check_files looked
        job_fail(job=job, code="file_unavailable", message=str(exc))
        return
    train_examples = examples.train
    if examples.split_note:
        job_record_split(job=job, note=examples.split_note)
    job.hyperparameters, job.total_steps = _resolved(job.hyperparameters_requested, len(train_examples))
    job.save(update_fields=["hyperparameters", "total_steps"])
    if _move(job, FineTuningJob.Status.VALIDATING_FILES, FineTuningJob.Status.QUEUED):
        event_add(job=job, message=f"Files validated: {len(train_examples)} training examples. Job queued.")
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job.pk))


def _resolved(requested: dict[str, Any], n_examples: int) -> tuple[dict[str, Any], int]:
    """The job's hyperparameters with "auto" resolved, and its estimated steps.

    "auto" epochs stay "auto" (until training says how many it ran), with the time
    budget and epoch cap that bound them; the estimate is the dataset rule's epochs.
    """
    resolved = resolve_hyperparameters(
        n_examples,
        epochs=requested["n_epochs"],
        batch_size=requested["batch_size"],
        learning_rate_multiplier=requested["learning_rate_multiplier"],
    )
    hyperparameters: dict[str, Any] = {
        "n_epochs": resolved.epochs,
        "batch_size": resolved.batch_size,
        "learning_rate_multiplier": resolved.learning_rate_multiplier,
    }
    if requested["n_epochs"] == "auto":
        budget, cap = requested.get("time_budget_seconds", "auto"), requested.get("max_epochs", "auto")
        hyperparameters |= {
            "n_epochs": "auto",
            "time_budget_seconds": settings.FINETUNE_TIME_BUDGET_SECONDS if budget == "auto" else budget,
            "max_epochs": settings.FINETUNE_MAX_EPOCHS if cap == "auto" else cap,
        }
    return hyperparameters, resolved.epochs * -(-n_examples // resolved.batch_size)


def _enqueue(job_pk: int) -> None:
    selectors.job_task().enqueue(job_pk=job_pk)


def _move(job: FineTuningJob, current: str, new: str, **fields: Any) -> bool:
    """Set ``new`` status only if the job is still in ``current``; True if it moved."""
    moved = FineTuningJob.objects.filter(pk=job.pk, status=current).update(status=new, **fields)
    if moved:
        job.status = new
        for name, value in fields.items():
            setattr(job, name, value)
    return bool(moved)


def finetune_job_cancel(*, job: FineTuningJob) -> FineTuningJob:
    """Cancel a job that has not finished; a running worker stops before its next step.

    Raises ``JobStateError`` for a job that already succeeded, failed or was cancelled.
    """
    for current in (Job.Status.VALIDATING_FILES, Job.Status.QUEUED, Job.Status.RUNNING):
        if _move(job, current, Job.Status.CANCELLED, finished_at=timezone.now()):
            event_add(job=job, message="The job was cancelled.")
            return job
    job.refresh_from_db()
    raise JobStateError(f"The job {job.public_id} has already {job.status}; it cannot be cancelled.")


def finetune_job_retry(*, job: FineTuningJob, created_by: User | None = None) -> FineTuningJob:
    """A new job with the same files and requested settings as a failed or cancelled one.

    Refused like ``finetune_job_create`` (e.g. ``FileUnavailable`` when a file's data is
    gone); the old job is left as it was.
    """
    if job.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
        raise JobStateError(f"Only a failed or cancelled job can be retried; {job.public_id} is {job.status}.")
    requested = job.hyperparameters_requested
    new = finetune_job_create(
        training_file=job.training_file,
        base_model=job.base_model,
        n_epochs=requested.get("n_epochs", "auto"),
        batch_size=requested.get("batch_size", "auto"),
        learning_rate_multiplier=requested.get("learning_rate_multiplier", "auto"),
        time_budget_seconds=requested.get("time_budget_seconds", "auto"),
        max_epochs=requested.get("max_epochs", "auto"),
        validation_file=job.validation_file,
        validation_split=job.validation_split,
        seed=job.seed,
        suffix=job.suffix,
        method=job.method,
        created_by=created_by or job.created_by,
    )
    FineTuningJob.objects.filter(pk=new.pk).update(retried_from=job)
    new.retried_from = job
    event_add(job=new, message=f"Retry of {job.public_id}.")
    return new


def finetune_jobs_fail_stale() -> int:
    """Mark failed every running job whose worker stopped writing its heartbeat."""
    bound = timezone.now() - timedelta(seconds=settings.FINETUNE_STALE_AFTER_SECONDS)
    stale = list(Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=bound))
    for job in stale:
        job_fail(job=job, code="worker_stopped", message="The training worker stopped.")
    return len(stale)


REQUEUE_LIMIT = 3
REQUEUED = "The job's task was lost (its worker or server stopped); queued it again."


def finetune_jobs_recover() -> int:
    """Settle every job a crash left unfinished; returns how many it changed.

    Each state is given ``FINETUNE_STALE_AFTER_SECONDS``: a running job whose heartbeat
    stopped fails (``worker_stopped``); a job still validating its files, which happens
    within the request that created it, fails (``validation_interrupted``); a queued job
    that no task will run is queued again, up to ``REQUEUE_LIMIT`` times, then fails
    (``not_started``).
    """
    bound = timezone.now() - timedelta(seconds=settings.FINETUNE_STALE_AFTER_SECONDS)
    changed = finetune_jobs_fail_stale()
    for job in Job.objects.filter(status=Job.Status.VALIDATING_FILES, created_at__lt=bound):
        changed += job_fail(
            job=job,
            code="validation_interrupted",
            message="The server stopped while checking the files; retry the job.",
        )
    for job in selectors.jobs_queued_without_a_task(since=bound):
        changed += _job_requeue(job)
    return changed


def _job_requeue(job: FineTuningJob) -> bool:
    if job.events.filter(message=REQUEUED).count() >= REQUEUE_LIMIT:
        return job_fail(
            job=job, code="not_started", message=f"No worker could start the job after {REQUEUE_LIMIT} tries."
        )
    event_add(job=job, message=REQUEUED, level=FineTuningEvent.Level.WARN)
    _enqueue(job.pk)
    return True


# --- What the training task writes --------------------------------------------------


def job_claim(*, job: FineTuningJob, threads: int) -> bool:
    """queued -> running for this worker; False if it was cancelled or taken."""
    now = timezone.now()
    claimed = _move(job, Job.Status.QUEUED, Job.Status.RUNNING, started_at=now, heartbeat_at=now, threads=threads)
    if claimed:
        event_add(job=job, message=f"Training started on {threads} thread(s) at lower priority.")
    return claimed


def job_heartbeat(*, job_pk: int) -> None:
    Job.objects.filter(pk=job_pk, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())


def job_record_step(
    *, job: FineTuningJob, step: int, total_steps: int, epoch: int, loss: float, lr: float, elapsed: float, eta: float
) -> None:
    """Store one step's metrics and the job's progress."""
    FineTuningMetric.objects.create(job=job, step=step, epoch=epoch, train_loss=loss, learning_rate=lr)
    Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
        step=step,
        total_steps=total_steps,
        epoch=epoch,
        elapsed_seconds=elapsed,
        eta_seconds=None if eta != eta else eta,  # NaN before the first step
        heartbeat_at=timezone.now(),
    )


def job_record_epoch(
    *,
    job: FineTuningJob,
    epoch: int,
    train_loss: float,
    val_loss: float | None,
    val_accuracy: float | None,
    learnt: int | None = None,
    examples: int = 0,
) -> None:
    """Attach an epoch's figures to its last step, and say so in the events."""
    last = FineTuningMetric.objects.filter(job=job, epoch=epoch).order_by("-step").first()
    if last is not None:
        last.epoch_train_loss, last.val_loss, last.val_token_accuracy = train_loss, val_loss, val_accuracy
        last.save(update_fields=["epoch_train_loss", "val_loss", "val_token_accuracy"])
    detail = (
        f", validation loss {val_loss:.4f}, token accuracy {val_accuracy:.1%}"
        if val_loss is not None and val_accuracy is not None
        else ""
    )
    learning = f"; {learnt}/{examples} training examples learnt" if learnt is not None and examples else ""
    event_add(job=job, message=f"Epoch {epoch} done: training loss {train_loss:.4f}{detail}{learning}.")


def job_record_stop(*, job: FineTuningJob, message: str, kept_epoch: int, epochs: int) -> None:
    """Say why training stopped and which epoch's weights were kept; "auto" epochs
    become the number that ran."""
    hyperparameters = dict(job.hyperparameters)
    if hyperparameters.get("n_epochs") == "auto":
        hyperparameters["n_epochs"] = epochs
    Job.objects.filter(pk=job.pk).update(stop_reason=message, kept_epoch=kept_epoch, hyperparameters=hyperparameters)
    job.stop_reason, job.kept_epoch, job.hyperparameters = message, kept_epoch, hyperparameters
    event_add(job=job, message=f"Training stopped: {message}. Kept the weights of epoch {kept_epoch}.")


def job_record_split(*, job: FineTuningJob, note: str) -> None:
    """Say what the automatic validation split held out, and why."""
    Job.objects.filter(pk=job.pk).update(validation_note=note)
    job.validation_note = note
    event_add(job=job, message=note)


def job_succeed(
    *,
    job: FineTuningJob,
    output_dir: Path,
    base: bases.TrainingBase,
    trained_tokens: int,
    tokens_per_second: float,
    evaluation: dict[str, Any],
) -> FineTunedModel | None:
    """Register the fine-tuned model and mark the job succeeded, in one transaction.

    The model is named after the base its line started from and filed under the model
    whose weights it runs on (``base.runs_on``): a LoRA adapter trained on a full
    fine-tuned model is served on that model's weights. Returns None (and deletes
    ``output_dir``) if the job was cancelled meanwhile.
    """
    with transaction.atomic():
        model_id = f"{registry.FINE_TUNED_PREFIX}{base.root_id}:{job.suffix}:{job.public_id[-8:].lower()}"
        if not _move(
            job,
            Job.Status.RUNNING,
            Job.Status.SUCCEEDED,
            finished_at=timezone.now(),
            fine_tuned_model=model_id,
            trained_tokens=trained_tokens,
            tokens_per_second=tokens_per_second,
            evaluation=evaluation,
            eta_seconds=0.0,
        ):
            shutil.rmtree(output_dir, ignore_errors=True)
            return None
        model = FineTunedModel.objects.create(
            public_id=model_id,
            label=_model_label(job, base.root_id),
            base_model=base.runs_on(job.method),
            adapter_path=str(output_dir),
            method=job.method,
            job=job,
            training_file=job.training_file,
            hyperparameters=job.hyperparameters,
            created_by=job.created_by,
        )
        event_add(job=job, message=f"New fine-tuned model {model_id} is ready to chat with.")
    return model


def _model_label(job: FineTuningJob, root_base_id: str) -> str:
    base = registry.model_get(root_base_id)
    name = base.label if base else root_base_id
    return f"{name} · {job.suffix or job.public_id[-8:].lower()}"


def job_fail(*, job: FineTuningJob, code: str, message: str) -> bool:
    """Mark an unfinished job failed with a code and a sentence; False if it had finished."""
    for current in (Job.Status.VALIDATING_FILES, Job.Status.QUEUED, Job.Status.RUNNING):
        if _move(job, current, Job.Status.FAILED, error_code=code, error_message=message, finished_at=timezone.now()):
            event_add(job=job, message=f"Failed: {message}", level=FineTuningEvent.Level.ERROR)
            return True
    return False


def event_add(*, job: FineTuningJob, message: str, level: str = FineTuningEvent.Level.INFO) -> FineTuningEvent:
    return FineTuningEvent.objects.create(job=job, message=message, level=level)


# --- Fine-tuned models --------------------------------------------------------------


def finetuned_model_rename(*, model: FineTunedModel, label: str) -> FineTunedModel:
    """Give a fine-tuned model the name people see in the model picker."""
    label = " ".join((label or "").split())
    if not label:
        raise FineTuningError("A model name cannot be empty.", field="label")
    if len(label) > 120:
        raise FineTuningError("A model name may be at most 120 characters.", field="label")
    model.label = label
    model.save(update_fields=["label"])
    return model


def finetuned_model_set_hidden(*, model: FineTunedModel, hidden: bool) -> FineTunedModel:
    """Hide a model from the picker and the API (or show it again); chats keep their text."""
    model.hidden = hidden
    model.save(update_fields=["hidden"])
    return model


def finetuned_model_set_visibility(
    *, model: FineTunedModel, visibility: str, groups: Iterable[Group] = ()
) -> FineTunedModel:
    """Choose who may use a model: everyone, staff, or members of ``groups`` (superusers
    always may). Replies already being written on it go on."""
    chosen = list(groups)
    if visibility not in FineTunedModel.Visibility.values:
        raise FineTuningError(f"Unknown visibility {visibility!r}.", field="visibility")
    if visibility == FineTunedModel.Visibility.GROUPS and not chosen:
        raise FineTuningError("Choose at least one group, or another visibility.", field="groups")
    with transaction.atomic():
        model.visibility = visibility
        model.save(update_fields=["visibility"])
        model.groups.set(chosen)
    return model


def finetuned_model_delete(*, model: FineTunedModel) -> None:
    """Delete a model and its folder; its weights leave every engine in this process.

    A full model that LoRA models run on is refused (``model_in_use``): its folder
    holds their weights. Delete those first.
    """
    from inference.runtime import process_runtime

    dependents = selectors.finetuned_model_dependents(model=model)
    if dependents:
        raise FineTuningError(
            f"{model.public_id} cannot be deleted: LoRA models run on its weights ({', '.join(dependents)}); "
            "delete those first.",
            field="model",
            code="model_in_use",
        )
    path = Path(model.adapter_path)
    model.delete()
    # This process lets go at once; the others at their next status report.
    process_runtime().release_unused()
    if path.is_dir() and Path(settings.FINETUNE_OUTPUT_DIR).resolve() in path.resolve().parents:
        shutil.rmtree(path, ignore_errors=True)
