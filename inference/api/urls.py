"""URLs under /v1/."""

from __future__ import annotations

from django.urls import path, re_path

from inference.api import views

urlpatterns = [
    path("chat/completions", views.chat_completions, name="api_chat_completions"),
    path("chat-completions", views.seed_chat_completions, name="api_seed_chat_completions"),
    path("models", views.models_list, name="api_models"),
    path("models/<str:model_id>", views.model_detail, name="api_model"),
    path("openapi.json", views.openapi_json, name="api_openapi"),
    re_path(r"^(?P<path>.*)$", views.not_found_view),
]
