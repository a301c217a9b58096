"""The fine-tuning app: training files, jobs, the runner, the admin pages and the command."""

from __future__ import annotations

from django.apps import AppConfig


class FinetuningConfig(AppConfig):
    name = "finetuning"
    verbose_name = "Fine-tuning"
