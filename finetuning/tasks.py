"""Background tasks (django-tasks, database backend): run with ``manage.py db_worker``.

``make run`` starts that worker next to the web server (``manage.py serve``).
"""

from __future__ import annotations

from django_tasks import task

from finetuning import runner, services


@task()
def finetune_job_run(*, job_pk: int) -> str:
    """Train one fine-tuning job; first settle jobs a crash left behind (finetune_jobs_recover)."""
    services.finetune_jobs_recover()
    return runner.finetune_job_execute(job_pk=job_pk)
