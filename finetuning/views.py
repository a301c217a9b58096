"""The fine-tuning admin pages: upload, file statistics and launch, the live job page.

Each view is wrapped by ``admin_site.admin_view`` (staff login) in ``finetuning/admin.py``
and checks the "can fine-tune" permission first; staff without it get 403.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from finetuning import presenters, runner, selectors, services
from finetuning.errors import DatasetRejected, FineTuningError
from finetuning.forms import LaunchForm, UploadForm
from finetuning.models import FineTuningJob, TrainingFile

PERMISSION = "finetuning.can_finetune"


def can_finetune(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(PERMISSION))


def _check(request: HttpRequest) -> None:
    if not can_finetune(request.user):
        raise PermissionDenied("Fine-tuning needs the “Can fine-tune models” permission.")


def job_url(job: FineTuningJob) -> str:
    return reverse("admin:finetuning_finetuningjob_change", args=[job.public_id])


def file_url(file: TrainingFile) -> str:
    return reverse("admin:finetuning_file", args=[file.public_id])


def upload(request: HttpRequest, site: AdminSite) -> HttpResponse:
    _check(request)
    form = UploadForm(request.POST or None, request.FILES or None)
    refused: DatasetRejected | None = None
    if request.method == "POST" and form.is_valid():
        uploaded = form.cleaned_data["file"]
        try:
            file = services.training_file_create(
                filename=uploaded.name,
                data=uploaded.read(),
                created_by=request.user,  # type: ignore[arg-type]
            )
        except DatasetRejected as exc:
            refused = exc
        except FineTuningError as exc:
            form.add_error("file", str(exc))
        else:
            messages.success(request, f"{file.filename} is valid: {file.stats['examples']} examples.")
            return redirect(file_url(file))
    context = {**site.each_context(request), "title": "Upload training data", "form": form, "refused": refused}
    return render(request, "admin/finetuning/upload.html", context, status=400 if refused or form.errors else 200)


def file_detail(request: HttpRequest, file_id: str, site: AdminSite) -> HttpResponse:
    _check(request)
    file = selectors.training_file_get(file_id=file_id)
    form = LaunchForm(request.POST or None, training_file=file, initial=_launch_initial())
    if request.method == "POST" and form.is_valid():
        try:
            job = _launch(request, file, form.cleaned_data)
        except FineTuningError as exc:
            form.add_service_error(exc)
        else:
            return redirect(job_url(job))
    stats = file.stats
    context = {
        **site.each_context(request),
        "title": f"Training file {file.filename}",
        "file": file,
        "stats": stats,
        "estimated_time": presenters.duration(stats.get("estimated_seconds")),
        "form": form,
        "threads": runner.training_threads(),
    }
    return render(request, "admin/finetuning/file_detail.html", context, status=400 if form.errors else 200)


def _launch_initial() -> dict[str, Any]:
    from django.conf import settings

    return {"validation_split": settings.FINETUNE_DEFAULT_VALIDATION_SPLIT, "method": settings.FINETUNE_METHOD}


def _launch(request: HttpRequest, file: TrainingFile, data: dict[str, Any]) -> FineTuningJob:
    return services.finetune_job_create(
        training_file=file,
        base_model=data["base_model"],
        method=data["method"],
        n_epochs=data["n_epochs"].strip(),
        batch_size=data["batch_size"].strip(),
        learning_rate_multiplier=data["learning_rate_multiplier"].strip(),
        time_budget_seconds=data["time_budget_seconds"].strip(),
        max_epochs=data["max_epochs"].strip(),
        validation_file=data["validation_file"],
        validation_split=data["validation_split"],
        seed=data["seed"],
        suffix=data["suffix"],
        created_by=request.user,  # type: ignore[arg-type]
    )


def job_detail(request: HttpRequest, job_id: str, site: AdminSite) -> HttpResponse:
    _check(request)
    services.finetune_jobs_recover()
    job = selectors.job_get(job_id=job_id)
    context = {**site.each_context(request), "title": f"Fine-tuning job {job.public_id}", **_job_context(job)}
    return render(request, "admin/finetuning/job_detail.html", context)


def job_live(request: HttpRequest, job_id: str, site: AdminSite) -> HttpResponse:
    """The part of the job page that htmx refreshes every 2 seconds while it runs."""
    _check(request)
    services.finetune_jobs_recover()
    job = selectors.job_get(job_id=job_id)
    return render(request, "admin/finetuning/job_live.html", _job_context(job))


def _job_context(job: FineTuningJob) -> dict[str, Any]:
    metrics = list(selectors.job_metrics(job=job).values_list("step", "train_loss", "val_loss"))
    chart = presenters.loss_chart(
        [(step, loss) for step, loss, _ in metrics],
        [(step, val) for step, _, val in metrics if val is not None],
        total_steps=job.total_steps,
    )
    return {
        "job": job,
        "epochs": selectors.job_epoch_rows(job=job),
        "events": selectors.job_events(job=job, limit=50),
        "chart": chart,
        "elapsed": presenters.duration(job.elapsed_seconds if job.step else None),
        "remaining": presenters.duration(job.eta_seconds) if job.status == FineTuningJob.Status.RUNNING else "—",
        "threads": job.threads or runner.training_threads(),
        "live_url": reverse("admin:finetuning_job_live", args=[job.public_id]),
    }


@require_POST
def job_cancel(request: HttpRequest, job_id: str, site: AdminSite) -> HttpResponse:
    _check(request)
    job = selectors.job_get(job_id=job_id)
    try:
        services.finetune_job_cancel(job=job)
    except FineTuningError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job {job.public_id} was cancelled.")
    return redirect(job_url(job))


@require_POST
def job_retry(request: HttpRequest, job_id: str, site: AdminSite) -> HttpResponse:
    _check(request)
    job = selectors.job_get(job_id=job_id)
    try:
        new = services.finetune_job_retry(job=job, created_by=request.user)  # type: ignore[arg-type]
    except FineTuningError as exc:
        messages.error(request, str(exc))
        return redirect(job_url(job))
    messages.success(request, f"Job {new.public_id} retries {job.public_id}.")
    return redirect(job_url(new))
