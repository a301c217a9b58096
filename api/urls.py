"""URLs under /v1/."""

from __future__ import annotations

from django.urls import path, re_path

from api import views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="api_chat_completions"),
    path("chat-completions", views.seed_chat_completions, name="api_seed_chat_completions"),
    path("models", views.models_list, name="api_models"),
    path("models/<str:model_id>", views.model_detail, name="api_model"),
    path("files", views.files, name="api_files"),
    path("files/<str:file_id>", views.file_detail, name="api_file"),
    path("fine_tuning/jobs", views.jobs, name="api_jobs"),
    path("fine_tuning/jobs/<str:job_id>", views.job_detail, name="api_job"),
    path("fine_tuning/jobs/<str:job_id>/cancel", views.job_cancel, name="api_job_cancel"),
    path("fine_tuning/jobs/<str:job_id>/events", views.job_events, name="api_job_events"),
    path("fine_tuning/jobs/<str:job_id>/checkpoints", views.job_checkpoints, name="api_job_checkpoints"),
    path("openapi.json", views.openapi_json, name="api_openapi"),
    re_path(r"^(?P<path>.*)$", views.not_found_view),
]
