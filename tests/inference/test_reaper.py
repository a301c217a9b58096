"""The reaper: a dead worker's replies end without anyone watching, and tabs are told.

Tests drive its tick (``reap_once``) with a heartbeat made stale, instead of waiting.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from chatsite.reaper import reap_once, reaper_stop
from conversations import services
from conversations.models import Message
from conversations.streams import WORKER_STOPPED
from tests.conversations.wsclient import open_socket

pytestmark = pytest.mark.django_db(transaction=True)


def streaming_reply(owner, *, beat_seconds_ago: float, text: str = "Half a rep") -> Message:
    chat = services.conversation_create(owner=owner)
    reply = services.turn_start(conversation=chat, text="hello").assistant_message
    Message.objects.filter(pk=reply.pk).update(
        content=text, heartbeat_at=timezone.now() - timedelta(seconds=beat_seconds_ago)
    )
    return reply


async def test_a_dead_workers_reply_ends_though_nobody_has_it_open(alice) -> None:
    dead = await database_sync_to_async(streaming_reply)(alice, beat_seconds_ago=3600)
    alive = await database_sync_to_async(streaming_reply)(alice, beat_seconds_ago=0)
    reaped = await reap_once()
    assert [stream.message_id for stream in reaped.replies] == [str(dead.public_id)]
    await dead.arefresh_from_db()
    await alive.arefresh_from_db()
    assert (dead.status, dead.error, dead.content) == ("error", WORKER_STOPPED, "Half a rep")
    assert alive.status == "streaming"


async def test_an_open_tab_is_shown_the_reaped_reply(alice) -> None:
    dead = await database_sync_to_async(streaming_reply)(alice, beat_seconds_ago=3600)
    chat = await database_sync_to_async(lambda: dead.conversation)()
    _, _, socket = await open_socket(alice, chat)
    await socket.receive()  # the snapshot of the streaming reply
    await reap_once()
    assert await socket.until_finished(str(dead.public_id)) == str(dead.public_id)
    assert socket.finished[str(dead.public_id)] == "error"
    assert "generation worker stopped" in socket.frames[-2] + socket.frames[-1]
    await socket.close()


async def test_a_reaped_reply_frees_its_stream_for_a_new_turn(alice, settings) -> None:
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    await database_sync_to_async(streaming_reply)(alice, beat_seconds_ago=3600)
    other = await database_sync_to_async(services.conversation_create)(owner=alice)
    await reap_once()
    turn = await database_sync_to_async(services.turn_start)(conversation=other, text="still here?")
    assert turn.assistant_message.status == "streaming"


async def test_every_process_serving_users_reaps_on_a_timer(alice, settings) -> None:
    settings.INFERENCE_REAPER = True
    settings.INFERENCE_REAP_INTERVAL_SECONDS = 0.1
    dead = await database_sync_to_async(streaming_reply)(alice, beat_seconds_ago=3600)
    elsewhere = await database_sync_to_async(services.conversation_create)(owner=alice)
    _, _, socket = await open_socket(alice, elsewhere)  # the first thing this process serves
    try:
        deadline = time.monotonic() + 10
        while (await Message.objects.aget(pk=dead.pk)).status == "streaming":
            assert time.monotonic() < deadline, "no reaper ended the reply"
            await asyncio.sleep(0.05)
    finally:
        await socket.close()
        reaper_stop()
