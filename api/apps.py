"""The API app: the OpenAI-compatible endpoints under /v1/ and the keys that open them."""

from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API keys"
