"""A reply that finishes while the database refuses writes is not lost.

The database refuses the reply's final write (``OperationalError``, as from PostgreSQL
restarting or SQLite busy past its timeout) a few times, then takes it: the job keeps
the whole text and retries. Only when it never comes back is the user told.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from conversations.streams import WORKER_STOPPED, streams_fail_stale
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = [f"word{index} " for index in range(20)]


def refuse_final_writes(monkeypatch, times: int, meanwhile: Callable[[], None] = lambda: None) -> list[int]:
    """The first ``times`` final writes of a reply fail; returns the list of tries (grows)."""
    store = services.assistant_message_finish
    tries: list[int] = []

    def refusing(**ending):
        tries.append(len(tries) + 1)
        if len(tries) <= times:
            meanwhile()
            raise OperationalError("the database system is starting up")
        return store(**ending)

    monkeypatch.setattr(services, "assistant_message_finish", refusing)
    return tries


async def reply_of(chat) -> Message:
    return await Message.objects.filter(conversation=chat, role="assistant").alatest("created_at")


async def test_a_reply_finishing_while_the_database_refuses_writes_is_stored_whole(alice, chat, scripted_engine, monkeypatch) -> None:
    scripted_engine(ScriptedEngine(WORDS, delay=0.005))
    tries = refuse_final_writes(monkeypatch, times=4)
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Count for me"})
    message_id = await socket.until_finished(timeout=10)
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert len(tries) == 5, "refused four times, stored on the fifth"
    assert (reply.status, reply.finish_reason, reply.content) == ("complete", "stop", "".join(WORDS))
    assert reply.completion_tokens == len(WORDS)
    assert socket.finished[message_id] == "complete"
    assert "could not be saved" not in "".join(socket.frames), "a write that succeeded in the end worries nobody"
    await socket.close()


def _reaped_by_another_process() -> None:
    """Another process's reaper, to which the reply looked abandoned: its heartbeat could
    not reach the database either."""
    old = timezone.now() - timedelta(hours=1)
    Message.objects.filter(status=Message.Status.STREAMING).update(heartbeat_at=old)
    streams_fail_stale()


async def test_a_reply_reaped_during_the_outage_is_stored_whole_once_it_ends(alice, chat, scripted_engine, monkeypatch) -> None:
    scripted_engine(ScriptedEngine(WORDS, delay=0.005))
    reaped: list[int] = []

    def reap_once() -> None:
        if not reaped:
            reaped.append(1)
            _reaped_by_another_process()

    refuse_final_writes(monkeypatch, times=2, meanwhile=reap_once)
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Count for me"})
    message_id = await socket.until_finished(timeout=10)
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert reaped, "the reply was failed as abandoned while its end could not be stored"
    assert socket.finished[message_id] == "complete"
    assert (reply.status, reply.finish_reason, reply.error) == ("complete", "stop", "")
    assert reply.content == "".join(WORDS)
    await socket.close()


async def test_the_user_is_told_when_a_finished_reply_cannot_be_saved(alice, chat, scripted_engine, monkeypatch, settings) -> None:
    settings.INFERENCE_FINISH_RETRY_SECONDS = 0.3
    scripted_engine(ScriptedEngine(WORDS, delay=0.005))
    tries = refuse_final_writes(monkeypatch, times=10**6)
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Count for me"})
    await socket.until(lambda: bool(socket.frames) and "could not be saved" in socket.frames[-1])
    await generation_wait_idle()
    [message_id] = socket.started
    assert len(tries) > 2, "it retried before giving up"
    assert socket.texts[message_id] == "".join(WORDS), "the tab still shows the whole reply, to copy"
    assert 'role="alert"' in socket.frames[-1] and f"m-{message_id}-notice" in socket.frames[-1]
    assert message_id not in socket.finished
    reply = await reply_of(chat)
    assert reply.status == "streaming" and reply.error != WORKER_STOPPED
    await socket.close()
