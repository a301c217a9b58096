"""Helpers the tests share (fixtures live in the conftest.py files)."""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import Callable

from django.contrib.auth.models import Group, Permission, User
from django.test import Client

# The cores each test process may use: all of them, or their share when `make test` runs
# one process per core (pytest-xdist sets PYTEST_XDIST_WORKER_COUNT). Two processes
# each running torch on every core made every heavy test slower than running them apart.
TEST_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
CORES_PER_TEST_PROCESS = max(1, (os.cpu_count() or 1) // TEST_PROCESSES)

# The groups data migrations make, and what each grants today (app label, codenames).
# Fine-tuners was made under "inference" and moved to "finetuning" with the re-cut.
MIGRATED_GROUPS = {
    "Fine-tuners": ("finetuning", ["can_finetune"]),
    "Transcript reviewers": (
        "conversations",
        importlib.import_module("conversations.migrations.0004_transcript_reviewers_group").CODENAMES,
    ),
}


def client_for(user: User) -> Client:
    """A test client logged in as ``user``."""
    client = Client()
    client.force_login(user)
    return client


def migrated_group(name: str) -> Group:
    """The group a data migration made, with what it grants today. A transactional test
    empties every table after it runs, and post_migrate then brings back permissions and
    content types but not groups: a group missing for that reason is made again here."""
    app_label, codenames = MIGRATED_GROUPS[name]
    group, created = Group.objects.get_or_create(name=name)
    if created:
        permissions = Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
        assert len(permissions) == len(codenames), f"{name}: not every permission of {codenames} exists"
        group.permissions.set(permissions)
    return group


def until(condition: Callable[[], bool], *, timeout: float = 10, what: str = "the condition") -> None:
    """Wait for ``condition()`` to hold, polling, and fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.01)


async def until_async(condition: Callable[[], bool], *, timeout: float = 10, what: str = "the condition") -> None:
    """``until`` for a coroutine: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        await asyncio.sleep(0.01)
