"""A database made before the apps were re-cut migrates without loss.

``tests/data/before_recut.sql`` is a SQLite database made with the code of the day
before the re-cut (the fine-tuning models in the ``inference`` app, API keys in an
``apikeys`` app): every migration applied, a user in the Fine-tuners group with an API
key, a training file, a succeeded job with its event, metric and fine-tuned model, a
queued job with its task, an engine status row and an admin history entry. Migrating it
with today's code must keep every row, and keep them working: the key still opens the
API, the group still grants fine-tuning, the queued task still finds its function.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DUMP = ROOT / "tests" / "data" / "before_recut.sql"
# The key made for alice when the dump was written.
SECRET = "pk-ml1hjEPfR5Q4m2yFxIAM4HK64OI4U9we5nanGFaBTY4"

READ_BACK = """
import json
import django
django.setup()
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django_tasks_db.models import DBTaskResult
from api.keys.selectors import api_key_authenticate
from finetuning.models import FineTunedModel, FineTuningJob, TrainingFile
from finetuning.tasks import finetune_job_run
from inference.models import EngineStatus

alice = User.objects.get(username="alice")
job = FineTuningJob.objects.get(status="succeeded")
task = DBTaskResult.objects.get()
entry = LogEntry.objects.get()
print(json.dumps({
    "key_owner": api_key_authenticate(secret=SECRET).owner.username,
    "can_finetune": alice.has_perm("finetuning.can_finetune"),
    "job": [job.stop_reason, job.training_file.filename, job.events.get().message, job.metrics.get().train_loss],
    "model": [FineTunedModel.objects.get().public_id, FineTunedModel.objects.get().job_id == job.pk],
    "files": TrainingFile.objects.count(),
    "jobs": FineTuningJob.objects.count(),
    "task_finds_its_function": task.task.func is finetune_job_run.func,
    "engine_status": EngineStatus.objects.get().process_id,
    "admin_history": entry.get_edited_object().pk == job.pk,
}))
"""


def _environment(database: Path) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "DJANGO_SETTINGS_MODULE": "chatsite.tool_settings"}


def test_a_database_from_before_the_recut_migrates_and_keeps_working(tmp_path: Path) -> None:
    database = tmp_path / "before.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.executescript(DUMP.read_text())
        rows_before = {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in (
                "apikeys_apikey",
                "inference_trainingfile",
                "inference_finetuningjob",
                "inference_finetuningevent",
                "inference_finetuningmetric",
                "inference_finetunedmodel",
                "inference_enginestatus",
                "auth_user_groups",
                "auth_group_permissions",
                "django_admin_log",
            )
        }
    env = _environment(database)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying api.0001_initial... OK" in migrate.stdout
    assert "Applying finetuning.0001_initial... OK" in migrate.stdout

    with sqlite3.connect(database) as connection:
        for table, count in rows_before.items():
            assert connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == count, table
        labels = set(connection.execute("SELECT app_label, model FROM django_content_type").fetchall())
        assert ("finetuning", "finetuningjob") in labels and ("api", "apikey") in labels
        assert not {label for label in labels if label[0] == "apikeys"}
        assert {model for app, model in labels if app == "inference"} == {"enginestatus"}
        # The permission kept its row (and so its group), under its new app.
        granted = connection.execute(
            "SELECT ct.app_label, p.codename FROM auth_group_permissions gp "
            "JOIN auth_permission p ON p.id = gp.permission_id JOIN django_content_type ct ON ct.id = p.content_type_id "
            "JOIN auth_group g ON g.id = gp.group_id WHERE g.name = 'Fine-tuners'"
        ).fetchall()
        assert granted == [("finetuning", "can_finetune")]

    read = subprocess.run(
        [sys.executable, "-c", f"SECRET = {SECRET!r}\n" + READ_BACK], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert read.returncode == 0, read.stderr
    seen = json.loads(read.stdout.strip().splitlines()[-1])
    assert seen == {
        "key_owner": "alice",
        "can_finetune": True,
        "job": ["learnt 4/4", "facts.jsonl", "Job succeeded.", 1.5],
        "model": ["ft:smollm2-135m-instruct:facts:abc", True],
        "files": 1,
        "jobs": 2,
        "task_finds_its_function": True,
        "engine_status": "h:1",
        "admin_history": True,
    }

    # A second migrate has nothing left to do, and the models match the migrations.
    again = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout + again.stderr
