"""The fine-tuning app: training files, jobs, the runner, the admin pages and the command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from django_tasks.base import Task


class FinetuningConfig(AppConfig):
    name = "finetuning"
    verbose_name = "Fine-tuning"
    # The background task that runs a job (finetuning/tasks.py). The services queue it
    # through here rather than importing it, since the task imports them.
    job_task: Task[..., str]

    def ready(self) -> None:
        from finetuning.tasks import finetune_job_run

        self.job_task = finetune_job_run
