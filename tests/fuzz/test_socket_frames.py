"""Property test: no frame a browser (or an attacker) sends crashes the conversation
socket or leaves a half-stored turn behind."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations import services
from conversations.consumers import ConversationConsumer
from conversations.generation import generation_wait_idle
from conversations.models import Message
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.django_db(transaction=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
actions = st.sampled_from(["send", "stop", "regenerate", "edit", "switch", "", "SEND", None, 7])
shaped = st.fixed_dictionaries(
    {"action": actions},
    optional={"message": st.one_of(st.text(max_size=120), json_values), "message_id": json_values},
).map(json.dumps)
frames = st.one_of(st.text(max_size=200), json_values.map(json.dumps), shaped)


@pytest.fixture
def frames_handled(monkeypatch) -> Counter[str]:
    """How many frames each conversation's socket has finished handling."""
    handled: Counter[str] = Counter()
    receive = ConversationConsumer.receive

    async def counted(self, *args, **kwargs):
        try:
            await receive(self, *args, **kwargs)
        finally:
            handled[str(self.conversation.public_id)] += 1

    monkeypatch.setattr(ConversationConsumer, "receive", counted)
    return handled


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, min_size=1, max_size=4))
# A reply that finished before "still there?" was sent once let the test stop waiting
# early and end its event loop under that turn's job, leaving the reply "streaming".
@example(batch=[json.dumps({"action": "send", "message": "hi"})])
@example(batch=[json.dumps({"action": "send", "message": "a"}), json.dumps({"action": "stop"})])
@example(batch=[json.dumps({"action": "send", "message": "a"}), json.dumps({"action": "regenerate"})])
def test_no_frame_crashes_the_socket_or_half_stores_a_turn(alice, scripted_engine, settings, frames_handled, batch) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 10_000  # the examples share one user and one minute
    scripted_engine(ScriptedEngine(["ok"], delay=0.0))
    chat = services.conversation_create(owner=alice)
    async_to_sync(_exchange)(alice, chat, batch, frames_handled)
    users = Message.objects.filter(conversation=chat, role="user")
    assert users.filter(content="still there?").exists()
    replies = Message.objects.filter(conversation=chat, role="assistant")
    assert users.count() == replies.count(), "every stored message has its reply"
    assert not replies.filter(status="streaming").exists(), "no reply is left hanging"
    for reply in replies:
        assert reply.parent is not None and reply.parent.role == "user"


def _streaming(chat) -> bool:
    return Message.objects.filter(conversation=chat, role="assistant", status="streaming").exists()


async def _settle(socket, chat, handled: Counter[str], sent: int) -> None:
    """Wait (with a deadline) until the socket has handled ``sent`` frames and every
    reply they started has ended: each job stores its end before its task finishes."""
    deadline = time.monotonic() + 30
    while handled[str(chat.public_id)] < sent or await database_sync_to_async(_streaming)(chat):
        assert time.monotonic() < deadline, "a frame was never handled or a reply never ended"
        await asyncio.sleep(0.01)
    await generation_wait_idle()
    while not await socket.communicator.receive_nothing(timeout=0.01):
        await socket.receive()


async def _exchange(alice, chat, batch: list[str], handled: Counter[str]) -> None:
    connected, _, socket = await open_socket(alice, chat)
    assert connected
    for sent, frame in enumerate(batch, start=1):
        await socket.communicator.send_input({"type": "websocket.receive", "text": frame})
        await _settle(socket, chat, handled, sent)
    # The socket survived whatever came before: a real message still gets a reply.
    await socket.send({"action": "send", "message": "still there?"})
    await _settle(socket, chat, handled, len(batch) + 1)
    await socket.close()
