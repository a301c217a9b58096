"""The fine-tuning admin: jobs (with upload, launch and live job pages), files, models.

Only users with the "Can fine-tune models" permission (superusers, the "Fine-tuners"
group) see any of it; other staff get 403 and do not see the section.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.html import format_html

from finetuning import selectors, services, views
from finetuning.models import FineTunedModel, FineTuningJob, TrainingFile


class FineTuningPermission(admin.ModelAdmin):
    """Visible to fine-tuners only; nothing is added or changed through the stock forms."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return views.can_finetune(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return views.can_finetune(request.user)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FineTuningJob)
class FineTuningJobAdmin(FineTuningPermission):
    list_display = (
        "job_link",
        "status",
        "base_model",
        "method",
        "training_file",
        "progress",
        "fine_tuned_model",
        "created_at",
    )
    list_display_links = None
    list_filter = ("status", "method")
    change_list_template = "admin/finetuning/job_list.html"

    @admin.display(description="Job")
    def job_link(self, job: FineTuningJob) -> str:
        return format_html('<a href="{}">{}</a>', views.job_url(job), job.public_id)

    @admin.display(description="Progress")
    def progress(self, job: FineTuningJob) -> str:
        return f"{job.progress_percent} % (step {job.step}/{job.total_steps})"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if views.can_finetune(request.user):
            services.finetune_jobs_recover()
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        return views.job_detail(request, object_id, self.admin_site)

    def get_urls(self) -> list[URLPattern]:
        def page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            return self.admin_site.admin_view(partial(view, site=self.admin_site))

        custom = [
            path("upload/", page(views.upload), name="finetuning_upload"),
            path("files/<str:file_id>/", page(views.file_detail), name="finetuning_file"),
            path("<str:job_id>/live/", page(views.job_live), name="finetuning_job_live"),
            path("<str:job_id>/cancel/", page(views.job_cancel), name="finetuning_job_cancel"),
            path("<str:job_id>/retry/", page(views.job_retry), name="finetuning_job_retry"),
        ]
        return custom + super().get_urls()


@admin.register(TrainingFile)
class TrainingFileAdmin(FineTuningPermission):
    list_display = ("file_link", "filename", "format", "examples", "bytes", "created_by", "created_at")
    list_display_links = None

    @admin.display(description="File")
    def file_link(self, file: TrainingFile) -> str:
        return format_html('<a href="{}">{}</a>', views.file_url(file), file.public_id)

    @admin.display(description="Examples")
    def examples(self, file: TrainingFile) -> int:
        return int(file.stats.get("examples", 0))


class FineTunedModelForm(forms.ModelForm[FineTunedModel]):
    class Meta:
        model = FineTunedModel
        fields = ("label", "hidden", "visibility", "groups")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("visibility") == FineTunedModel.Visibility.GROUPS and not data.get("groups"):
            self.add_error("groups", "Choose at least one group, or another visibility.")
        return data


@admin.register(FineTunedModel)
class FineTunedModelAdmin(FineTuningPermission):
    """Rename (label), hide, choose who may use it, and delete; everything else is read-only."""

    form = FineTunedModelForm
    list_display = ("label", "public_id", "base_model", "hidden", "visibility", "job_link", "created_at")
    list_filter = ("visibility", "hidden")
    fields = (
        "label",
        "hidden",
        "visibility",
        "groups",
        "public_id",
        "base_model",
        "method",
        "adapter_path",
        "hyperparameters",
        "created_by",
    )
    filter_horizontal = ("groups",)
    readonly_fields = ("public_id", "base_model", "method", "adapter_path", "hyperparameters", "created_by")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return views.can_finetune(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return views.can_finetune(request.user)

    @admin.display(description="Job")
    def job_link(self, model: FineTunedModel) -> str:
        if model.job is None:
            return "—"
        return format_html('<a href="{}">{}</a>', views.job_url(model.job), model.job.public_id)

    def save_model(self, request: HttpRequest, obj: FineTunedModel, form: Any, change: bool) -> None:
        services.finetuned_model_rename(model=obj, label=obj.label)
        services.finetuned_model_set_hidden(model=obj, hidden=obj.hidden)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        data = form.cleaned_data
        services.finetuned_model_set_visibility(model=form.instance, visibility=data["visibility"], groups=data["groups"])
        super().save_related(request, form, formsets, change)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, Any, Any]:
        """Refuse, on the confirmation page, to delete a full model that others run on."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        chosen = {model.public_id for model in objs}
        for model in objs:
            for child in selectors.finetuned_model_dependents(model=model):
                if child not in chosen:
                    protected.append(f"Fine-tuned model {child}, which runs on the weights of {model.public_id}")
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: FineTunedModel) -> None:
        services.finetuned_model_delete(model=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FineTunedModel]) -> None:
        for model in sorted(queryset, key=lambda model: model.method == "full"):  # what runs on a full model first
            services.finetuned_model_delete(model=model)
