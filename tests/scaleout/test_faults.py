"""Faults across processes: a worker killed mid-reply, a web process restarted
mid-reply, Redis restarted. Replies never hang and nothing written is lost.

The cluster runs the synthetic backend (filler text at a fixed, slow pace), so a
test can act while a reply is still streaming.
"""

from __future__ import annotations

import asyncio
import re
import signal

import pytest

from tests.scaleout.cluster import Browser, ChatSocket, Cluster, streamed_start_of

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

STALE_AFTER = 4


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {
        "INFERENCE_BACKEND": "synthetic",
        "INFERENCE_SYNTHETIC_TOKENS_PER_SECOND": "10",
        "INFERENCE_STALE_AFTER_SECONDS": str(STALE_AFTER),
    }


async def new_chat(cluster: Cluster, user: str, max_tokens: int) -> tuple[Browser, str]:
    browser = Browser(cluster.url("web0"))
    await asyncio.to_thread(browser.sign_up, user)
    conversation_id = await asyncio.to_thread(browser.new_chat, max_tokens=str(max_tokens))
    return browser, conversation_id


async def test_a_killed_worker_fails_its_reply_within_a_bound_and_the_chat_goes_on(cluster: Cluster) -> None:
    browser, conversation_id = await new_chat(cluster, "victim", max_tokens=200)
    async with ChatSocket(browser, cluster.url("web0"), conversation_id) as socket:
        await socket.send("A long answer, please.")
        await socket.until(lambda: len(socket.texts.get(socket.started[0], "")) > 20 if socket.started else False)
        for _ in range(300):  # let a flush reach the database (30 s at most)
            if cluster.reply(socket.started[0])[2]:
                break
            await asyncio.sleep(0.1)
        assert cluster.reply(socket.started[0])[2], "the streamed text never reached the database"
        cluster.kill("worker0", signal.SIGKILL)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        message_id = await socket.until_finished(timeout=30)
        waited = loop.time() - killed_at
        assert socket.finished[message_id] == "error"
        assert waited < STALE_AFTER + 6, f"the reply was marked failed {waited:.1f} s after the worker died"
        status, reason, content, error = cluster.reply(message_id)
        assert (status, reason) == ("error", "error")
        assert "generation worker stopped" in error
        assert len(content) > 0, "the text written before the crash is kept"

        cluster.start_worker("worker0")
        await socket.send("Try again, please.")
        await socket.until(lambda: len(socket.started) == 2)
        second = socket.started[1]
        await socket.until(lambda: second in socket.finished, timeout=60)
        assert socket.finished[second] == "complete"


async def test_a_web_process_restarted_mid_reply_resumes_in_the_reconnected_tab(cluster: Cluster) -> None:
    browser, conversation_id = await new_chat(cluster, "restarter", max_tokens=60)
    async with ChatSocket(browser, cluster.url("web0"), conversation_id) as socket:
        await socket.send("Keep talking.")
        await socket.until(lambda: len(socket.texts.get(socket.started[0], "")) > 10 if socket.started else False)
        message_id = socket.started[0]
    cluster.kill("web0", signal.SIGTERM)
    cluster.start_web("web0")
    async with ChatSocket(browser, cluster.url("web0"), conversation_id) as again:
        await again.until(lambda: message_id in again.texts or message_id in again.finished, timeout=30)
        await again.until(lambda: message_id in again.finished, timeout=60)
    status, reason, content, _ = cluster.reply(message_id)
    assert (status, reason) == ("complete", "length"), "the reply went on while the web process was down"
    assert len(content.split()) == 60
    assert streamed_start_of(again, message_id, content)


async def test_the_app_recovers_from_a_redis_restart_without_restarting(cluster: Cluster) -> None:
    browser, conversation_id = await new_chat(cluster, "survivor", max_tokens=50)
    async with ChatSocket(browser, cluster.url("web0"), conversation_id) as socket:
        await socket.send("Talk through the outage.")
        await socket.until(lambda: bool(socket.started) and len(socket.texts.get(socket.started[0], "")) > 5)
        message_id = socket.started[0]
        cluster.kill("redis", signal.SIGKILL)
        await asyncio.sleep(1.5)
        cluster.start_redis()
        try:
            await socket.until(lambda: message_id in socket.finished, timeout=60)
        except Exception:
            pass  # the socket may be dropped by the outage; a browser reconnects
    for _ in range(600):
        status, reason, content, _ = cluster.reply(message_id)
        if status != "streaming":
            break
        await asyncio.sleep(0.1)
    assert (status, reason) == ("complete", "length"), "the reply survived the outage"
    assert len(content.split()) == 50

    # The same processes serve a new chat after Redis came back.
    async with ChatSocket(browser, cluster.url("web0"), conversation_id) as fresh:
        await fresh.send("Are you back?")
        await fresh.until(lambda: any(m != message_id for m in fresh.started), timeout=60)
        second = next(m for m in fresh.started if m != message_id)
        await fresh.until(lambda: second in fresh.finished, timeout=60)
    assert fresh.finished[second] == "complete"
    assert all(name in cluster.processes for name in ("web0", "worker0"))
    assert cluster.processes["worker0"].poll() is None and cluster.processes["web0"].poll() is None
    assert re.search(r"Channel layer unavailable", cluster.log("worker0")), "the worker waited for Redis"
