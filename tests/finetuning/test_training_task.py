"""The training task on the tiny model: metrics per step, evaluation, a registered model."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from finetuning import runner, selectors, services
from finetuning.models import FineTunedModel, FineTuningJob
from finetuning.tasks import finetune_job_run
from inference import registry
from inference.engine.sharing import ChatActivity

pytestmark = pytest.mark.django_db

Status = FineTuningJob.Status


def queued_job(shout_file, **options):
    defaults = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 10, "validation_split": 0.25, "seed": 1}
    return services.finetune_job_create(
        training_file=shout_file, base_model="tiny-llama", enqueue=False, **{**defaults, **options}
    )


def test_the_task_trains_records_metrics_evaluates_and_registers_a_model(shout_twice_file, settings) -> None:
    shout_file = shout_twice_file
    job = queued_job(shout_file, suffix="shout")
    assert finetune_job_run.call(job_pk=job.pk) == "succeeded"
    job.refresh_from_db()
    assert (job.step, job.total_steps, job.epoch, job.threads) == (9, 9, 3, settings.FINETUNE_THREADS)
    assert job.started_at <= job.finished_at and job.trained_tokens > 0 and job.tokens_per_second > 0
    losses = list(selectors.job_metrics(job=job).values_list("train_loss", flat=True))
    assert len(losses) == 9 and losses[-1] < losses[0]
    epochs = selectors.job_epoch_rows(job=job)
    assert [row.epoch for row in epochs] == [1, 2, 3]
    assert all(row.val_loss is not None and 0 <= row.val_token_accuracy <= 1 for row in epochs)
    assert epochs[-1].epoch_train_loss < epochs[0].epoch_train_loss
    assert job.evaluation["examples"] == 2
    assert set(job.evaluation["base"]) == {"exact_match", "token_accuracy", "loss"}
    assert {"prompt", "expected", "base", "fine_tuned"} <= set(job.evaluation["rows"][0])
    model = FineTunedModel.objects.get()
    assert job.fine_tuned_model == model.public_id == f"ft:tiny-llama:shout:{job.public_id[-8:].lower()}"
    assert (Path(model.adapter_path) / "adapter_config.json").exists()
    assert Path(model.adapter_path).parent == Path(settings.FINETUNE_OUTPUT_DIR)
    assert model.hyperparameters == job.hyperparameters and model.training_file == shout_file
    spec = registry.model_get(model.public_id)
    assert spec is not None and spec.adapter_path == model.adapter_path
    assert spec.base_source == registry.model_get("tiny-llama").base_source
    messages = [event.message for event in job.events.all()]
    assert any(m.startswith("Epoch 3 done: training loss") for m in messages)
    assert messages[-1] == f"New fine-tuned model {model.public_id} is ready to chat with."


def test_a_full_fine_tuning_job_registers_a_whole_model_that_is_its_own_base(shout_twice_file) -> None:
    job = queued_job(shout_twice_file, method="full", suffix="whole")
    assert runner.finetune_job_execute(job_pk=job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.evaluation["examples"] == 2, "the saved model was loaded back and evaluated"
    model = FineTunedModel.objects.get()
    assert model.method == "full" and (Path(model.adapter_path) / "config.json").exists()
    spec = registry.model_get(model.public_id)
    assert spec is not None and (spec.base_source, spec.adapter_path) == (model.adapter_path, None)


def test_a_fine_tuned_model_can_be_trained_further(shout_file) -> None:
    first = queued_job(shout_file, n_epochs=1)
    runner.finetune_job_execute(job_pk=first.pk)
    first.refresh_from_db()
    second = services.finetune_job_create(
        training_file=shout_file, base_model=first.fine_tuned_model, n_epochs=1, suffix="more", enqueue=False
    )
    assert runner.finetune_job_execute(job_pk=second.pk) == "succeeded"
    second.refresh_from_db()
    assert second.fine_tuned_model.startswith("ft:tiny-llama:more:")  # still runs on the tiny base


def test_cancel_during_training_stops_it_and_keeps_nothing(shout_file, monkeypatch) -> None:
    job = queued_job(shout_file)
    record_step = services.job_record_step

    def cancel_after_two(**kwargs):
        record_step(**kwargs)
        if kwargs["step"] == 2:
            services.finetune_job_cancel(job=FineTuningJob.objects.get(pk=job.pk))

    monkeypatch.setattr(services, "job_record_step", cancel_after_two)
    assert runner.finetune_job_execute(job_pk=job.pk) == "cancelled"
    job.refresh_from_db()
    assert job.step == 2 and job.metrics.count() == 2
    assert not FineTunedModel.objects.exists()
    assert not (Path(settings.FINETUNE_OUTPUT_DIR) / job.public_id).exists()
    assert job.events.last().message == "Training stopped at step 2; nothing was saved."


def test_a_crash_fails_the_job_with_the_reason(shout_file, monkeypatch) -> None:
    from inference.engine import training

    def crash(*args, **kwargs):
        raise MemoryError("no room for the optimizer state")

    monkeypatch.setattr(training, "train", crash)
    job = queued_job(shout_file)
    assert runner.finetune_job_execute(job_pk=job.pk) == "failed"
    job.refresh_from_db()
    assert job.error_code == "training_failed"
    assert job.error_message == "Training failed: no room for the optimizer state"
    assert job.events.last().level == "error"


def test_training_takes_every_core_and_gives_way_to_chat(settings, monkeypatch, tmp_path) -> None:
    settings.FINETUNE_THREADS = 0
    settings.INFERENCE_ACTIVITY_DIR = tmp_path / "activity"
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert runner.training_threads() == 2
    share = runner.compute_share(2)
    assert share.chat_busy is not None and not share.chat_busy()
    ChatActivity(tmp_path / "activity").set_busy(True)  # an engine of this machine writes
    assert share.chat_busy() and share.yield_threads == 1
    settings.FINETUNE_THREADS = 3
    assert runner.training_threads() == 3


def test_a_machine_that_only_trains_keeps_its_threads(settings, monkeypatch) -> None:
    settings.FINETUNE_THREADS = 0
    settings.FINETUNE_YIELD_TO_CHAT = False
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert runner.training_threads() == 1  # without yielding, chat keeps a core
    assert runner.compute_share(1).chat_busy is None
