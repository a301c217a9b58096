"""Per-user limits hold across web processes on PostgreSQL.

Two processes start a turn for the same user at the same moment, each in its own
conversation, each having counted the user's replies before the other created one
(tests/scaleout/limit_racer.py holds them there). Only one may start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.server import ROOT, manage
from tests.conftest import TINY_MODEL_DIR
from tests.scaleout.cluster import PG_ADMIN
from tests.tiny_model import save_tiny_model

pytestmark = pytest.mark.scaleout

SETUP = """
from django.contrib.auth.models import User
from conversations import services
user = User.objects.create_user({username!r})
print(*(services.conversation_create(owner=user).pk for _ in range(2)))
"""


@pytest.fixture(scope="module")
def postgres_env() -> Iterator[dict[str, str]]:
    save_tiny_model(TINY_MODEL_DIR)
    database = f"parley_limits_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://root@127.0.0.1:5432/{database}",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "INFERENCE_MODEL": str(TINY_MODEL_DIR),
        "INFERENCE_CACHE_DIR": str(ROOT / ".cache" / "models"),
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        yield env
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def race(env: dict[str, str], username: str, workdir: Path) -> list[str]:
    """Two processes start a turn for ``username`` at once; what each printed."""
    first, second = manage(env, "shell", "-c", SETUP.format(username=username)).splitlines()[-1].split()
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.scaleout.limit_racer", name, other, pk, str(workdir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, other, pk in (("a", "b", first), ("b", "a", second))
    ]
    results = [racer.communicate(timeout=120) for racer in racers]
    for racer, (_, errors) in zip(racers, results, strict=True):
        assert racer.returncode == 0, errors
    return sorted(out.strip() for out, _ in results)


def streaming_replies(env: dict[str, str], username: str) -> int:
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM conversations_message m"
            " JOIN conversations_conversation c ON c.id = m.conversation_id"
            " JOIN auth_user u ON u.id = c.owner_id"
            " WHERE u.username = %s AND m.role = 'assistant' AND m.status = 'streaming'",
            (username,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_two_processes_cannot_both_take_a_users_last_stream(postgres_env, tmp_path: Path) -> None:
    env = {**postgres_env, "CHAT_MAX_CONCURRENT_STREAMS": "1"}
    refused, started = race(env, "streamer", tmp_path)
    assert started == "started"
    assert refused.startswith("refused: You already have 1 replies being written")
    assert streaming_replies(env, "streamer") == 1


def test_two_processes_cannot_both_send_a_users_last_message_of_the_minute(postgres_env, tmp_path: Path) -> None:
    env = {**postgres_env, "CHAT_MESSAGES_PER_MINUTE": "1", "CHAT_MAX_CONCURRENT_STREAMS": "5"}
    refused, started = race(env, "chatterbox", tmp_path)
    assert started == "started"
    assert refused == "refused: You can send 1 messages a minute; wait a moment and try again."
    assert streaming_replies(env, "chatterbox") == 1
