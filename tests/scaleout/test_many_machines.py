"""Many machines on one: two daphne processes and two generation workers on the local
PostgreSQL and a private Redis, with chats through both web processes at once."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.scaleout.cluster import ROOT, Browser, ChatSocket, Cluster, streamed_start_of

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_size() -> tuple[int, int]:
    return (2, 2)


def workers_used(cluster: Cluster) -> set[str]:
    return {name for name in ("worker0", "worker1") if re.search(r"took reply \d+", cluster.log(name))}


def reply_errors(cluster: Cluster) -> list[str]:
    with psycopg.connect(cluster.env["DATABASE_URL"]) as conn:
        return [row[0] for row in conn.execute("select error from conversations_message where status = 'error'")]


async def chat_once(cluster: Cluster, web: str, user: str, question: str) -> tuple[str, ChatSocket]:
    browser = Browser(cluster.url(web))
    await asyncio.to_thread(browser.sign_up, user)
    conversation_id = await asyncio.to_thread(browser.new_chat, max_tokens="24")
    async with ChatSocket(browser, cluster.url(web), conversation_id) as socket:
        await socket.send(question)
        message_id = await socket.until_finished(timeout=120)
    return message_id, socket


async def test_concurrent_chats_through_both_web_processes_on_both_workers(cluster: Cluster) -> None:
    for attempt in range(3):
        chats = [
            chat_once(cluster, f"web{index % 2}", f"user{attempt}x{index}", f"Question {index}?") for index in range(8)
        ]
        results = await asyncio.gather(*chats)
        for message_id, socket in results:
            assert socket.finished[message_id] == "complete", reply_errors(cluster)
            stored = (await asyncio.to_thread(cluster.reply, message_id))[2]
            assert streamed_start_of(socket, message_id, stored), (socket.texts.get(message_id), stored)
        assert any(socket.deltas for _, socket in results), "replies streamed"
        if workers_used(cluster) == {"worker0", "worker1"}:
            break
    assert workers_used(cluster) == {"worker0", "worker1"}, "both generation workers served chats"
    with psycopg.connect(cluster.env["DATABASE_URL"]) as conn:
        statuses = conn.execute("select status, count(*) from conversations_message group by status").fetchall()
    assert dict(statuses).get("streaming", 0) == 0
    assert dict(statuses)["complete"] >= 16


async def test_a_reply_generated_on_a_worker_streams_to_sockets_on_both_web_processes(cluster: Cluster) -> None:
    browser = Browser(cluster.url("web0"))
    await asyncio.to_thread(browser.sign_up, "watcher")
    conversation_id = await asyncio.to_thread(browser.new_chat, max_tokens="40")
    async with (
        ChatSocket(browser, cluster.url("web0"), conversation_id) as here,
        ChatSocket(browser, cluster.url("web1"), conversation_id) as there,
    ):
        await here.send("Tell me something.")
        message_id = await here.until_finished(timeout=120)
        await there.until(lambda: message_id in there.finished, timeout=60)
    stored = (await asyncio.to_thread(cluster.reply, message_id))[2]
    assert here.finished[message_id] == there.finished[message_id] == "complete"
    assert stored and all(streamed_start_of(socket, message_id, stored) for socket in (here, there))
    assert here.deltas or there.deltas, "the reply streamed"


def test_the_processes_share_nothing_but_postgres_and_redis(cluster: Cluster) -> None:
    env = cluster.env
    assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://")
    assert Path(cluster.workdir).exists()
    assert all(process.poll() is None for process in cluster.processes.values()), "every process is still up"


def test_queue_depth_and_worker_load_are_visible(cluster: Cluster) -> None:
    env = {**cluster.env, "DJANGO_SUPERUSER_PASSWORD": "an operator pass phrase 7"}
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "ops",
            "--email",
            "ops@example.com",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    browser = Browser(cluster.url("web1"))
    browser.log_in("ops", "an operator pass phrase 7")
    for _ in range(40):  # each worker reports every few seconds
        overview = json.loads(browser.get("/status.json")[1])
        workers = [p for p in overview["processes"] if p["role"] == "worker" and p["up"]]
        if len(workers) == 2 and all(p["tokens_generated"] > 0 for p in workers):
            break
        time.sleep(0.5)
    assert len(workers) == 2, overview
    assert all(p["tokens_generated"] > 0 for p in workers), f"both workers generated tokens: {overview}"
