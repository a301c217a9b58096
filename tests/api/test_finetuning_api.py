"""Files and fine-tuning jobs through the openai client, on the admin's services (tiny model).

Jobs here stay queued (no task worker runs next to this server); the slow test in
test_finetuning_run.py trains one to the end.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.api.conftest import TINY_MODEL_ID

DATA = Path(__file__).resolve().parents[1] / "data"

GRANT = """
from django.contrib.auth.models import Permission, User
carol = User.objects.filter(username="carol").first() or User.objects.create_user("carol", is_staff=True)
carol.user_permissions.add(Permission.objects.get(codename="can_finetune"))
"""


@pytest.fixture(scope="module")
def tuner(api_server):
    """carol: staff with the "can fine-tune" permission, like the admin asks."""
    api_server.manage("shell", "--no-imports", "-c", GRANT)
    with openai.OpenAI(base_url=api_server.base_url, api_key=api_server.new_key("carol"), max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def training_file(tuner):
    return tuner.files.create(file=(DATA / "parley_codes.jsonl").open("rb"), purpose="fine-tune")


def test_it_uploads_lists_and_retrieves_a_training_file(tuner, training_file) -> None:
    assert training_file.id.startswith("file-")
    assert training_file.status == "processed"
    assert training_file.filename == "parley_codes.jsonl"
    assert training_file.bytes == (DATA / "parley_codes.jsonl").stat().st_size
    assert training_file.id in [file.id for file in tuner.files.list()]
    assert tuner.files.retrieve(training_file.id).filename == "parley_codes.jsonl"


def test_a_bad_file_is_refused_with_its_line_numbers(tuner) -> None:
    bad = b'{"prompt": "a", "completion": "b"}\nnot json\n{"prompt": "", "completion": "c"}\n'
    with pytest.raises(openai.BadRequestError) as caught:
        tuner.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    assert "Line 2" in caught.value.message
    assert caught.value.body["param"] == "file"


def test_a_file_can_be_deleted(tuner) -> None:
    file = tuner.files.create(file=(DATA / "parley_codes_heldout.jsonl").open("rb"), purpose="fine-tune")
    assert tuner.files.delete(file.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        tuner.files.retrieve(file.id)


def test_a_job_is_created_listed_followed_and_cancelled(tuner, training_file) -> None:
    job = tuner.fine_tuning.jobs.create(
        model=TINY_MODEL_ID,
        training_file=training_file.id,
        hyperparameters={"n_epochs": 2},
        suffix="codes",
        seed=7,
    )
    assert job.id.startswith("ftjob-")
    assert job.status == "queued"
    assert job.model == TINY_MODEL_ID
    assert job.hyperparameters.n_epochs == 2
    assert job.hyperparameters.batch_size != "auto", "auto values are resolved when the job is queued"
    assert job.seed == 7
    assert job.id in [listed.id for listed in tuner.fine_tuning.jobs.list()]
    assert tuner.fine_tuning.jobs.retrieve(job.id).status == "queued"
    messages = [event.message for event in tuner.fine_tuning.jobs.list_events(job.id)]
    assert any("queued" in message for message in messages)
    assert list(tuner.fine_tuning.jobs.checkpoints.list(job.id)) == []
    assert tuner.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
        tuner.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError, match="used by a fine-tuning job"):
        tuner.files.delete(training_file.id)


def test_job_settings_are_checked_by_name(tuner, training_file) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        tuner.fine_tuning.jobs.create(
            model=TINY_MODEL_ID, training_file=training_file.id, hyperparameters={"n_epochs": 0}
        )
    assert caught.value.body["param"] == "n_epochs"
    with pytest.raises(openai.NotFoundError) as missing:
        tuner.fine_tuning.jobs.create(model="no-such-base", training_file=training_file.id)
    assert missing.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as no_file:
        tuner.fine_tuning.jobs.create(model=TINY_MODEL_ID, training_file="file-nothing")
    assert no_file.value.body["param"] == "training_file"


def test_the_method_follows_openais_shape_and_parleys_training_type_picks_lora_or_full(tuner, training_file) -> None:
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4}}}
    full = tuner.fine_tuning.jobs.create(
        model=TINY_MODEL_ID,
        training_file=training_file.id,
        method=method,
        extra_body={"training_type": {"type": "full"}},
    )
    assert full.method is not None and full.method.type == "supervised"
    assert full.method.supervised is not None and full.method.supervised.hyperparameters is not None
    assert (full.method.supervised.hyperparameters.n_epochs, full.hyperparameters.batch_size) == (3, 4)
    assert full.model_extra is not None and full.model_extra["training_type"] == {"type": "full"}
    assert tuner.fine_tuning.jobs.retrieve(full.id).model_extra["training_type"] == {"type": "full"}
    lora = tuner.fine_tuning.jobs.create(model=TINY_MODEL_ID, training_file=training_file.id)
    assert lora.model_extra is not None and lora.model_extra["training_type"] == {"type": "lora"}, "the default"
    bare = tuner.fine_tuning.jobs.create(
        model=TINY_MODEL_ID, training_file=training_file.id, extra_body={"training_type": "Full"}
    )
    assert bare.model_extra is not None and bare.model_extra["training_type"] == {"type": "full"}
    for job in (full, lora, bare):
        tuner.fine_tuning.jobs.cancel(job.id)
    for wrong, param in (({"type": "half"}, "training_type"), ({"type": "lora", "r": 4}, "training_type.r")):
        with pytest.raises(openai.BadRequestError) as caught:
            tuner.fine_tuning.jobs.create(
                model=TINY_MODEL_ID, training_file=training_file.id, extra_body={"training_type": wrong}
            )
        assert caught.value.body["param"] == param


LOSE_DATA = """
from django.core.files.storage import default_storage
from finetuning.models import TrainingFile
default_storage.delete(TrainingFile.objects.get(public_id={file_id!r}).stored_path)
"""


@pytest.mark.parametrize("field", ["training_file", "validation_file"])
def test_a_file_whose_stored_data_is_gone_is_refused_by_name(api_server, tuner, training_file, field) -> None:
    lost = tuner.files.create(
        file=(f"lost-{field}.jsonl", (DATA / "parley_codes_heldout.jsonl").read_bytes()), purpose="fine-tune"
    )
    api_server.manage("shell", "--no-imports", "-c", LOSE_DATA.format(file_id=lost.id))
    files = {"training_file": training_file.id, field: lost.id}
    jobs_before = [job.id for job in tuner.fine_tuning.jobs.list()]
    with pytest.raises(openai.BadRequestError) as caught:
        tuner.fine_tuning.jobs.create(model=TINY_MODEL_ID, **files)
    assert caught.value.status_code == 400
    kind = field.replace("_", " ")
    assert caught.value.body["param"] == field
    assert caught.value.body["code"] == "file_unavailable"
    assert caught.value.body["message"].startswith(
        f"The {kind} lost-{field}.jsonl ({lost.id}) cannot be used: its data"
    )
    assert "is missing" in caught.value.body["message"]
    assert [job.id for job in tuner.fine_tuning.jobs.list()] == jobs_before, "no job was made"
    assert tuner.files.retrieve(lost.id).status == "processed", "the file's record is left as it was"


CRASH = """
from datetime import timedelta
from django.utils import timezone
from finetuning.models import FineTuningJob
long_ago = timezone.now() - timedelta(hours=1)
FineTuningJob.objects.filter(public_id={dead!r}).update(status="running", heartbeat_at=long_ago)
FineTuningJob.objects.filter(public_id={stuck!r}).update(status="validating_files", created_at=long_ago)
"""


def test_jobs_left_by_a_crash_read_failed_with_a_reason(api_server, tuner, training_file) -> None:
    dead, stuck = (tuner.fine_tuning.jobs.create(model=TINY_MODEL_ID, training_file=training_file.id) for _ in "ab")
    api_server.manage("shell", "--no-imports", "-c", CRASH.format(dead=dead.id, stuck=stuck.id))
    worker_died = tuner.fine_tuning.jobs.retrieve(dead.id)
    assert worker_died.status == "failed"
    assert worker_died.error is not None and worker_died.error.code == "worker_stopped"
    listed = {job.id: job for job in tuner.fine_tuning.jobs.list()}
    assert listed[stuck.id].status == "failed"
    assert listed[stuck.id].error is not None and listed[stuck.id].error.code == "validation_interrupted"


def test_an_unknown_job_is_not_found(tuner) -> None:
    with pytest.raises(openai.NotFoundError):
        tuner.fine_tuning.jobs.retrieve("ftjob-nothing")


def test_fine_tuning_needs_the_admins_permission(client) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.files.list()
    assert "Can fine-tune models" in caught.value.message
    with pytest.raises(openai.PermissionDeniedError):
        client.fine_tuning.jobs.create(model=TINY_MODEL_ID, training_file="file-x")


@pytest.mark.parametrize(("name", "value"), [("time_budget_seconds", 5), ("max_epochs", 201)])
def test_a_budget_or_epoch_cap_out_of_range_is_refused_by_name(tuner, training_file, name, value) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        tuner.fine_tuning.jobs.create(model=TINY_MODEL_ID, training_file=training_file.id, hyperparameters={name: value})
    assert caught.value.body["param"] == name and caught.value.body["type"] == "invalid_request_error"
    assert "must be between" in caught.value.message
