"""Fine-tuning fixtures: people with and without the permission, small datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.helpers import CORES_PER_TEST_PROCESS, client_for, migrated_group

WORDS = ["cat", "dog", "bird", "fish", "frog", "mole", "lynx", "wolf"]


@pytest.fixture(autouse=True)
def _finetune_settings(settings, tmp_path: Path) -> None:
    settings.FINETUNE_OUTPUT_DIR = tmp_path / "finetuned"
    settings.FINETUNE_NICENESS = 0  # never lower the test runner's own priority
    settings.FINETUNE_THREADS = CORES_PER_TEST_PROCESS
    settings.FINETUNE_HEARTBEAT_SECONDS = 3600


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


def shout_pairs(words: list[str] = WORDS) -> bytes:
    return jsonl([{"prompt": f"Shout {w}", "completion": w.upper()} for w in words])


def shout_twice_pairs(words: list[str] = WORDS[:4]) -> bytes:
    """Each word asked two ways: the automatic split can hold out one phrasing of some."""
    return jsonl([{"prompt": f"{verb} {w}", "completion": w.upper()} for w in words for verb in ("Shout", "Yell")])


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("root", password="correct horse battery")


@pytest.fixture
def superuser_client(admin_user: User) -> Client:
    """A client logged in as ``admin_user`` (named apart from pytest-django's admin_client)."""
    return client_for(admin_user)


@pytest.fixture
def finetuner(db) -> User:
    user = User.objects.create_user("carol", password="correct horse battery", is_staff=True)
    user.groups.add(migrated_group("Fine-tuners"))
    return user


@pytest.fixture
def plain_staff(db) -> User:
    return User.objects.create_user("dave", password="correct horse battery", is_staff=True)


@pytest.fixture
def shout_file(admin_user):
    from finetuning import services

    return services.training_file_create(filename="shout.jsonl", data=shout_pairs(), created_by=admin_user)


@pytest.fixture
def shout_twice_file(admin_user):
    """8 examples like ``shout_file``, but two per completion: a 0.25 split holds out 2."""
    from finetuning import services

    return services.training_file_create(filename="twice.jsonl", data=shout_twice_pairs(), created_by=admin_user)
