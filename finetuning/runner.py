"""The body of the training task: claim a queued job, train, evaluate, register the model.

It runs in a django-tasks worker (``manage.py db_worker``), or inline from
``manage.py finetune --wait`` when no worker picks the job up. Training takes
``FINETUNE_THREADS`` threads (by default every core) at a lower priority
(``FINETUNE_NICENESS``) and drops to ``FINETUNE_YIELD_THREADS`` while chat on the same
machine is writing a reply (``inference/engine/sharing.py``), so chat stays responsive. Every step's
metrics go to the database; a heartbeat thread proves the worker is alive while it
loads, trains and evaluates; any exception marks the job failed with a reason.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from finetuning import bases, selectors, services
from finetuning.errors import FineTuningError
from finetuning.models import FineTuningJob
from inference.engine.datasets import Example, Hyperparameters

logger = logging.getLogger(__name__)
EVALUATION_ROWS = 8
# Of an "auto" job's time budget, the share kept for evaluating and saving after training
# (26 s of 600 on the near-twin bench, docs/performance.md).
AFTER_TRAINING_SHARE = 0.06
Observer = Callable[[FineTuningJob], None]


def training_threads() -> int:
    """FINETUNE_THREADS, or every core: while chat on this machine writes a reply,
    training gives way (``compute_share``); without that, every core but one."""
    if settings.FINETUNE_THREADS:
        return settings.FINETUNE_THREADS
    cores = os.cpu_count() or 1
    return cores if settings.FINETUNE_YIELD_TO_CHAT else max(1, cores - 1)


def compute_share(threads: int) -> Any:
    """Training's share of the cores: all ``threads`` while chat is quiet, and
    FINETUNE_YIELD_THREADS while an engine of this machine is writing a reply."""
    from inference.engine.sharing import ChatActivity, ComputeShare

    if not settings.FINETUNE_YIELD_TO_CHAT:
        return ComputeShare(threads=threads)
    activity = ChatActivity(settings.INFERENCE_ACTIVITY_DIR)
    return ComputeShare(threads=threads, yield_threads=settings.FINETUNE_YIELD_THREADS, chat_busy=activity.busy)


def finetune_job_execute(*, job_pk: int, observer: Observer | None = None) -> str:
    """Run one job to its end; returns its final status. A job not queued is left alone.

    ``observer`` (e.g. ``manage.py finetune --wait``) is called with the job after
    every recorded step and epoch.
    """
    job = FineTuningJob.objects.select_related("training_file", "validation_file").filter(pk=job_pk).first()
    if job is None:
        return "missing"
    threads = training_threads()
    if not services.job_claim(job=job, threads=threads):
        return job.status
    with _heartbeat(job.pk):
        try:
            _run(job, threads, observer)
        except _Cancelled:
            services.event_add(job=job, message=f"Training stopped at step {job.step}; nothing was saved.")
        except FineTuningError as exc:
            services.job_fail(job=job, code=exc.code or "invalid", message=str(exc))
        except Exception as exc:
            logger.exception("Fine-tuning job %s failed", job.public_id)
            services.job_fail(job=job, code="training_failed", message=f"Training failed: {exc}")
    job.refresh_from_db()
    return job.status


class _Cancelled(Exception):
    pass


class _Recorder:
    """The training loop's callbacks: metrics and progress into the database, cancel checks."""

    def __init__(self, job: FineTuningJob, observer: Observer | None, examples: int = 0) -> None:
        self.job = job
        self.observer = observer
        self.examples = examples  # training examples, for "learnt n/N"

    def notify(self) -> None:
        if self.observer is not None:
            self.job.refresh_from_db()
            self.observer(self.job)

    def step(
        self, step: int, total: int, epoch: int, loss: float, lr: float, tokens: int, elapsed: float, eta: float
    ) -> None:
        self.job.step = step
        services.job_record_step(
            job=self.job, step=step, total_steps=total, epoch=epoch, loss=loss, lr=lr, elapsed=elapsed, eta=eta
        )
        self.notify()

    def epoch(
        self, epoch: int, train_loss: float, val_loss: float | None, val_accuracy: float | None, learnt: int | None
    ) -> None:
        services.job_record_epoch(
            job=self.job,
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            learnt=learnt,
            examples=self.examples,
        )
        self.notify()

    def cancelled(self) -> bool:
        return not FineTuningJob.objects.filter(pk=self.job.pk, status=FineTuningJob.Status.RUNNING).exists()

    def check(self) -> None:
        if self.cancelled():
            raise _Cancelled


def _run(job: FineTuningJob, threads: int, observer: Observer | None) -> None:
    from inference.engine.loading import load_model
    from inference.engine.training import TrainingCancelled, train

    # 1. What to train on: the base weights, the examples, the resolved settings.
    base = bases.training_base(job.base_model)
    if base is None:
        raise FineTuningError(f"The model {job.base_model} is no longer available.", code="model_not_found")
    examples = selectors.job_examples(job=job, base_source=base.base_source)
    recorder = _Recorder(job, observer, examples=len(examples.train))
    services.event_add(
        job=job,
        message=f"{len(examples.train)} training examples, {len(examples.validation)} held out for validation.",
    )
    config = _config(job, base, threads)
    if job.method == "full" and base.init_adapter:
        services.event_add(
            job=job, message=f"Merging the LoRA adapter of {base.model_id} into a copy of its base to train fully."
        )
    # 2. Train: a fresh copy of the base, never the one a chat engine is serving.
    loaded = load_model(base.base_source, cache_dir=settings.INFERENCE_CACHE_DIR, threads=threads)
    output_dir = Path(settings.FINETUNE_OUTPUT_DIR) / job.public_id
    share = compute_share(threads)
    try:
        result = train(
            config,
            examples.train,
            output_dir=output_dir,
            base=loaded,
            validation=examples.validation,
            on_progress=recorder.step,
            on_epoch_end=recorder.epoch,
            should_cancel=recorder.cancelled,
            share=share,
        )
    except TrainingCancelled:
        raise _Cancelled from None
    if share.yielded_seconds >= 1:
        services.event_add(
            job=job,
            message=f"Training gave way to chat for {share.yielded_seconds:.0f} s "
            f"({share.yield_threads} thread{'s' if share.yield_threads != 1 else ''} instead of {threads} "
            "while replies were being written).",
        )
    _record_stop(job, result, examples.train, output_dir)
    services.event_add(
        job=job,
        message=f"Training finished in {result.train_seconds:.0f} s ({result.examples_per_second:.2f} examples/s).",
    )
    # 3. Evaluate base and fine-tuned on the held-out examples, then register the model.
    recorder.check()
    evaluation = _evaluate(job, loaded, base, output_dir, examples.validation, threads)
    recorder.check()
    services.job_succeed(
        job=job,
        output_dir=output_dir,
        base=base,
        trained_tokens=result.trained_tokens,
        tokens_per_second=result.tokens_per_second,
        evaluation=evaluation,
    )


def _config(job: FineTuningJob, base: bases.TrainingBase, threads: int) -> Any:
    """The training config of ``job``: "auto" epochs stop on evidence (StopRule)."""
    from inference.engine.training import StopRule, TrainingConfig

    hyper = job.hyperparameters
    auto = hyper["n_epochs"] == "auto"
    stop = None
    if auto:
        budget = hyper["time_budget_seconds"]
        stop = StopRule(
            max_epochs=hyper["max_epochs"],
            time_budget_seconds=budget,
            patience=settings.FINETUNE_PATIENCE_EPOCHS,
            # The budget runs from upload to a model chat can use: training leaves room
            # for what came before it and for the evaluation and saving after it.
            reserve_seconds=_seconds_since_start(job) + AFTER_TRAINING_SHARE * budget,
        )
    return TrainingConfig.from_hyperparameters(
        Hyperparameters(1 if auto else hyper["n_epochs"], hyper["batch_size"], hyper["learning_rate_multiplier"]),
        base_model=base.base_source,
        method=job.method,
        seed=job.seed,
        init_adapter=base.init_adapter,
        threads=threads,
        niceness=settings.FINETUNE_NICENESS,
        stop=stop,
    )


def _seconds_since_start(job: FineTuningJob) -> float:
    """Seconds since a worker took the job (reading its examples, loading the model);
    time spent waiting in the queue is not the job's."""
    from django.utils import timezone

    started = job.started_at or timezone.now()
    return max(0.0, (timezone.now() - started).total_seconds())


def _record_stop(job: FineTuningJob, result: Any, train: list[Example], output_dir: Path) -> None:
    """Say why training stopped; a run that stopped improving before it learnt fails."""
    from inference.engine.datasets import find_contradictions

    stop = result.stop
    services.job_record_stop(job=job, message=stop.message, kept_epoch=stop.kept_epoch, epochs=result.epochs)
    if stop.reason != "stalled" or stop.learnt_everything:
        return
    shutil.rmtree(output_dir, ignore_errors=True)
    raise FineTuningError(stalled_message(stop.message, find_contradictions(train)), code="training_stalled")


def stalled_message(reason: str, contradictions: list[Any]) -> str:
    """Why a job that stopped improving before it learnt made no model, and what to do."""
    message = f"The model stopped improving before it learnt its training examples ({reason})."
    if contradictions:
        lines = "; ".join(str(problem) for problem in contradictions[:10])
        more = f" (and {len(contradictions) - 10} more)" if len(contradictions) > 10 else ""
        return f"{message} Some examples contradict each other, so they cannot all be learnt: {lines}{more}."
    return f"{message} Try a higher learning rate multiplier, or check the examples it still gets wrong."


def _evaluate(
    job: FineTuningJob, loaded: Any, base: bases.TrainingBase, output_dir: Path, held_out: list[Example], threads: int
) -> dict[str, Any]:
    from inference.engine.evaluation import adapter_applied, evaluate
    from inference.engine.loading import load_model

    held_out = held_out[: settings.FINETUNE_EVAL_MAX_EXAMPLES]
    if not held_out:
        services.event_add(job=job, message="No held-out examples: evaluation skipped.")
        return {}
    services.event_add(job=job, message=f"Evaluating base and fine-tuned models on {len(held_out)} held-out examples.")
    starting = adapter_applied(loaded.model, base.init_adapter) if base.init_adapter else nullcontext(loaded.model)
    with starting as model:
        before = evaluate(model, loaded.tokenizer, held_out)
    if job.method == "full":
        tuned = load_model(str(output_dir), cache_dir=settings.INFERENCE_CACHE_DIR, threads=threads)
        after = evaluate(tuned.model, tuned.tokenizer, held_out)
    else:
        with adapter_applied(loaded.model, output_dir) as model:
            after = evaluate(model, loaded.tokenizer, held_out)
    services.event_add(
        job=job,
        message=f"Exact match {before.exact_match:.0%} before, {after.exact_match:.0%} after; "
        f"token accuracy {before.token_accuracy:.0%} before, {after.token_accuracy:.0%} after.",
    )
    return evaluation_as_json(before, after)


def evaluation_as_json(before: Any, after: Any) -> dict[str, Any]:
    def scores(result: Any) -> dict[str, float | None]:
        return {
            "exact_match": result.exact_match,
            "token_accuracy": result.token_accuracy,
            "loss": None if math.isnan(result.loss) else result.loss,
        }

    rows = [
        {
            "prompt": b.prompt,
            "expected": b.expected,
            "base": b.answer,
            "fine_tuned": a.answer,
            "base_exact": b.exact,
            "fine_tuned_exact": a.exact,
        }
        for b, a in zip(before.rows[:EVALUATION_ROWS], after.rows[:EVALUATION_ROWS], strict=True)
    ]
    return {"examples": before.examples, "base": scores(before), "fine_tuned": scores(after), "rows": rows}


@contextmanager
def _heartbeat(job_pk: int) -> Any:
    """Write the job's heartbeat every FINETUNE_HEARTBEAT_SECONDS until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.FINETUNE_HEARTBEAT_SECONDS):
                try:
                    services.job_heartbeat(job_pk=job_pk)
                except Exception:  # a busy database must not kill training
                    logger.warning("Could not write the heartbeat of job %s", job_pk, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"finetune-heartbeat-{job_pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
