"""Fine-tune from the command line, through the same validation and job services as the admin.

    python manage.py finetune data.jsonl [--base MODEL] [--method {lora,full}] [--epochs N]
        [--time-budget SECONDS] [--max-epochs N]
        [--suffix NAME] [--wait]

Without ``--wait`` the job is queued for the background worker (``manage.py db_worker``,
started by ``make run``) and its id is printed. With ``--wait`` the command follows the
job and prints its progress; if no worker has picked the job up within
``--worker-wait`` seconds (default 10), it trains the job in this process instead, and
says so. At the end it prints the new model's name. A file that cannot be read, or
has problems, is refused (with every problem listed), and the command exits with
status 1. So does a refused job setting; the file uploaded for it is deleted again,
so a refused run leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from finetuning import presenters, runner, services
from finetuning.errors import DatasetRejected, FineTuningError
from finetuning.models import FineTuningJob
from inference import registry

POLL_SECONDS = 2.0


class Command(BaseCommand):
    help = "Validate a training file, launch a fine-tuning job, and optionally wait for the new model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="JSONL (prompt/completion or chat) or CSV training data.")
        parser.add_argument("--base", default=None, help="Model to fine-tune (default: the default chat model).")
        parser.add_argument(
            "--method", choices=["lora", "full"], default=None, help="LoRA or full (default: FINETUNE_METHOD)."
        )
        parser.add_argument("--epochs", default="auto", help='Number of epochs, or "auto" (default).')
        parser.add_argument("--batch-size", default="auto", help='Examples per step, or "auto" (default).')
        parser.add_argument("--learning-rate-multiplier", default="auto", help='Or "auto" (default).')
        parser.add_argument(
            "--time-budget", default="auto", help='Seconds "auto" epochs may train (default: FINETUNE_TIME_BUDGET_SECONDS).'
        )
        parser.add_argument("--max-epochs", default="auto", help='Cap on "auto" epochs (default: FINETUNE_MAX_EPOCHS).')
        parser.add_argument("--validation-split", type=float, default=None, help="Share held out (default 0.1).")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--suffix", default="", help="Part of the new model's name.")
        parser.add_argument("--wait", action="store_true", help="Follow the job and print the new model's name.")
        parser.add_argument(
            "--worker-wait", type=float, default=10.0, help="Seconds to wait for a worker before training here."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        file = self._upload(options["file"])
        try:
            job = services.finetune_job_create(
                training_file=file,
                base_model=options["base"] or registry.default_model_id(),
                method=options["method"],
                n_epochs=options["epochs"],
                batch_size=options["batch_size"],
                learning_rate_multiplier=options["learning_rate_multiplier"],
                time_budget_seconds=options["time_budget"],
                max_epochs=options["max_epochs"],
                validation_split=options["validation_split"],
                seed=options["seed"],
                suffix=options["suffix"],
            )
        except FineTuningError as exc:
            services.training_file_delete(file=file)  # no job uses it: leave no orphan behind
            self.stderr.write(f"No job was created; the uploaded file {file.public_id} was deleted again.")
            raise CommandError(f"{exc.field or 'job'}: {exc}") from exc
        self.stdout.write(
            f"Job {job.public_id}: {job.get_status_display().lower()}, {job.get_method_display()}, "
            f"{job.total_steps} steps, {job.hyperparameters}."
        )
        if options["wait"]:
            self._follow(job, options["worker_wait"])

    def _upload(self, path: Path) -> Any:
        try:
            file = services.training_file_create(filename=path.name, data=_read(path))
        except DatasetRejected as exc:
            for problem in exc.problems:
                self.stderr.write(f"  {problem}")
            if exc.more:
                self.stderr.write(f"  … and {exc.more} more.")
            raise CommandError(str(exc)) from exc
        stats = file.stats
        self.stdout.write(
            f"{file.public_id}: {stats['examples']} examples, tokens per example "
            f"{stats['tokens_min']}/{stats['tokens_median']}/{stats['tokens_max']} (min/median/max)."
        )
        for warning in stats.get("warnings", []):
            self.stderr.write(f"  Warning: {warning}")
        return file

    def _follow(self, job: FineTuningJob, worker_wait: float) -> None:
        deadline = time.monotonic() + worker_wait
        while job.status == FineTuningJob.Status.QUEUED and time.monotonic() < deadline:
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            job.refresh_from_db()
        if job.status == FineTuningJob.Status.QUEUED:
            self.stdout.write(
                f"No background worker took the job within {worker_wait:g} s: training it in this process."
            )
            runner.finetune_job_execute(job_pk=job.pk, observer=self._print_progress)
        else:
            self.stdout.write("A background worker is training the job.")
            self._poll(job)
        job.refresh_from_db()
        self._finish(job)

    def _poll(self, job: FineTuningJob) -> None:
        last_step = -1
        while not job.is_finished:
            if job.step != last_step:
                self._print_progress(job)
                last_step = job.step
            time.sleep(POLL_SECONDS)
            job.refresh_from_db()

    def _print_progress(self, job: FineTuningJob) -> None:
        loss = job.metrics.order_by("-step").values_list("train_loss", flat=True).first()
        loss_text = f" · loss {loss:.4f}" if loss is not None else ""
        self.stdout.write(
            f"step {job.step}/{job.total_steps} · epoch {job.epoch}{loss_text} · elapsed "
            f"{presenters.duration(job.elapsed_seconds)} · remaining {presenters.duration(job.eta_seconds)}"
        )

    def _finish(self, job: FineTuningJob) -> None:
        if job.stop_reason:
            self.stdout.write(f"Training stopped: {job.stop_reason}; kept the weights of epoch {job.kept_epoch}.")
        if job.status != FineTuningJob.Status.SUCCEEDED:
            raise CommandError(f"Job {job.public_id} {job.status}: {job.error_message or 'no model was made.'}")
        evaluation = job.evaluation
        if evaluation:
            self.stdout.write(
                f"Held-out exact match: base {evaluation['base']['exact_match']:.0%}, "
                f"fine-tuned {evaluation['fine_tuned']['exact_match']:.0%}."
            )
        self.stdout.write(self.style.SUCCESS(f"Fine-tuned model: {job.fine_tuned_model}"))


def _read(path: Path) -> bytes:
    """The bytes at ``path``, or a CommandError naming the file and what is wrong."""
    try:
        if path.is_dir():
            raise CommandError(f"Cannot read the training file {path}: it is a folder.")
        if path.exists() and not path.is_file():
            raise CommandError(f"Cannot read the training file {path}: it is not a regular file.")
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read the training file {path}: {exc.strerror or exc}.") from None
