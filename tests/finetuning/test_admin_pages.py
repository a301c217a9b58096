"""The fine-tuning admin pages: upload, statistics and launch, the live job page, models."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from finetuning import runner, services
from finetuning.models import FineTunedModel, FineTuningJob, TrainingFile
from inference import registry
from tests.finetuning.conftest import shout_pairs

pytestmark = pytest.mark.django_db


def upload(client: Client, name: str, data: bytes):
    return client.post(reverse("admin:finetuning_upload"), {"file": SimpleUploadedFile(name, data)})


def test_a_file_with_a_bad_line_is_refused_with_that_line_shown(superuser_client) -> None:
    response = upload(superuser_client, "codes.jsonl", shout_pairs()[:-1] + b"\n{not json}\n")
    page = response.content.decode()
    assert response.status_code == 400
    assert "codes.jsonl was refused: 1 problem to fix." in page
    assert "Line 9: not valid JSON" in page
    assert "Nothing was stored." in page
    assert TrainingFile.objects.count() == 0


def test_a_good_file_shows_its_statistics_and_the_launch_form(superuser_client) -> None:
    response = upload(superuser_client, "shout.csv", b"prompt,completion\nShout cat,CAT\nShout dog,DOG\n")
    file = TrainingFile.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:finetuning_file", args=[file.public_id]
    )
    page = superuser_client.get(response["Location"]).content.decode()
    assert '<td id="stat-examples">2</td>' in page
    assert "Tokens per example" in page and "Estimated" in page
    assert "Launch fine-tuning" in page
    assert 'value="auto"' in page and '<option value="tiny-llama"' in page
    assert "at lower priority" in page


def test_launching_a_job_opens_its_live_page(superuser_client, shout_twice_file, django_capture_on_commit_callbacks) -> None:
    url = reverse("admin:finetuning_file", args=[shout_twice_file.public_id])
    form = {
        "base_model": "tiny-llama",
        "n_epochs": "2",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "validation_split": "0.25",
        "suffix": "shout",
    }
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = superuser_client.post(url, form)
    job = FineTuningJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:finetuning_finetuningjob_change", args=[job.public_id]
    )
    assert len(queued) == 1, "the training task is queued after the commit"
    assert job.hyperparameters["n_epochs"] == 2 and job.hyperparameters_requested["batch_size"] == "auto"
    page = superuser_client.get(response["Location"]).content.decode()
    assert "Queued" in page and 'hx-trigger="every 2s"' in page and ">Cancel</button>" in page
    assert "Step 0 of 12" in page  # 6 training examples, batch size 1 (auto), 2 epochs


def test_launch_errors_are_shown_on_their_field(superuser_client, shout_file) -> None:
    url = reverse("admin:finetuning_file", args=[shout_file.public_id])
    form = {"base_model": "tiny-llama", "n_epochs": "lots", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    response = superuser_client.post(url, form)
    assert response.status_code == 400
    assert "n_epochs must be &quot;auto&quot; or a number, not &#x27;lots&#x27;." in response.content.decode()
    assert not FineTuningJob.objects.exists()


def test_the_job_partial_shows_progress_epochs_chart_evaluation_and_stops_polling_when_done(
    superuser_client, shout_twice_file
) -> None:
    job = services.finetune_job_create(
        training_file=shout_twice_file,
        base_model="tiny-llama",
        n_epochs=2,
        batch_size=2,
        learning_rate_multiplier=10,
        validation_split=0.25,
        enqueue=False,
    )
    assert runner.finetune_job_execute(job_pk=job.pk) == "succeeded"
    live = superuser_client.get(reverse("admin:finetuning_job_live", args=[job.public_id]))
    page = live.content.decode()
    assert live.status_code == 200 and page.startswith('<div id="job-live"')
    assert "hx-trigger" not in page, "a finished job is no longer polled"
    assert "Succeeded" in page and 'value="100"' in page and "Step 6 of 6" in page
    assert page.count("<tr><td>") >= 2  # two epoch rows
    assert '<polyline class="ft-train-line" points="' in page and page.count("<circle") == 2
    assert "Evaluation on 2 held-out examples" in page and "Fine-tuned answer" in page
    job.refresh_from_db()
    assert f'<strong id="job-model">{job.fine_tuned_model}</strong>' in page
    assert ">Retry</button>" not in page and ">Cancel</button>" not in page


def test_cancel_and_retry_buttons(superuser_client, shout_file) -> None:
    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False)
    response = superuser_client.post(reverse("admin:finetuning_job_cancel", args=[job.public_id]))
    job.refresh_from_db()
    assert job.status == "cancelled"
    page = superuser_client.get(response["Location"]).content.decode()
    assert f"Job {job.public_id} was cancelled." in page and ">Retry</button>" in page
    response = superuser_client.post(reverse("admin:finetuning_job_retry", args=[job.public_id]))
    new = FineTuningJob.objects.exclude(pk=job.pk).get()
    assert response["Location"] == reverse("admin:finetuning_finetuningjob_change", args=[new.public_id])
    assert new.status == "queued" and new.retried_from == job


def test_the_job_list_marks_jobs_of_dead_workers_failed(superuser_client, shout_file) -> None:
    from datetime import timedelta

    from django.utils import timezone

    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False)
    services.job_claim(job=job, threads=1)
    FineTuningJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    page = superuser_client.get(reverse("admin:finetuning_finetuningjob_changelist")).content.decode()
    assert "Failed" in page and job.public_id in page and "Upload training data" in page


def make_model(tmp_path: Path, **fields) -> FineTunedModel:
    adapter = tmp_path / "finetuned" / "ftjob-x"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    defaults = {
        "public_id": "ft:tiny-llama:x:abcd1234",
        "label": "Shouter",
        "base_model": "tiny-llama",
        "adapter_path": str(adapter),
    }
    return FineTunedModel.objects.create(**{**defaults, **fields})


def test_models_can_be_renamed_hidden_and_deleted(superuser_client, tmp_path) -> None:
    model = make_model(tmp_path)
    url = reverse("admin:finetuning_finetunedmodel_change", args=[model.pk])
    assert superuser_client.post(url, {"label": "Loud helper", "hidden": "on", "visibility": "everyone"}).status_code == 302
    model.refresh_from_db()
    assert (model.label, model.hidden) == ("Loud helper", True)
    assert model.public_id not in dict(registry.model_choices())
    superuser_client.post(reverse("admin:finetuning_finetunedmodel_delete", args=[model.pk]), {"post": "yes"})
    assert not FineTunedModel.objects.exists()
    assert not Path(model.adapter_path).exists()


def test_the_method_is_picked_per_job_and_shown_on_its_page(superuser_client, shout_file, settings) -> None:
    settings.FINETUNE_METHOD = "full"
    url = reverse("admin:finetuning_file", args=[shout_file.public_id])
    page = superuser_client.get(url).content.decode()
    assert '<option value="full" selected>Full: every weight' in page, "the default comes from FINETUNE_METHOD"
    assert '<option value="lora">LoRA: a small adapter' in page
    form = {"base_model": "tiny-llama", "method": "lora", "n_epochs": "1", "batch_size": "auto"}
    response = superuser_client.post(url, {**form, "learning_rate_multiplier": "auto"})
    job = FineTuningJob.objects.get()
    assert job.method == "lora"
    page = superuser_client.get(response["Location"]).content.decode()
    assert '<dd id="job-method">LoRA: an adapter on the base' in page
    response = superuser_client.post(url, {**form, "method": "half", "learning_rate_multiplier": "auto"})
    assert response.status_code == 400 and "Select a valid choice. half is not one of" in response.content.decode()
    assert FineTuningJob.objects.count() == 1


def test_the_fine_tuning_admin_keeps_its_old_addresses(superuser_client: Client, shout_file: TrainingFile) -> None:
    """Links from before the apps were re-cut (/admin/inference/...) land on the same pages."""
    job = services.finetune_job_create(training_file=shout_file, base_model="tiny-llama", enqueue=False)
    old = f"/admin/inference/finetuningjob/{job.public_id}/live/?poll=1"
    response = superuser_client.get(old)
    assert response.status_code == 301
    assert response["Location"] == reverse("admin:finetuning_job_live", args=[job.public_id]) + "?poll=1"
    assert superuser_client.get(response["Location"]).status_code == 200
