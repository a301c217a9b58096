"""Property test: no frame a browser (or an attacker) sends crashes the conversation
socket or leaves a half-stored turn behind."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations import services
from conversations.models import Message
from inference.generation import generation_wait_idle
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


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, min_size=1, max_size=4))
def test_no_frame_crashes_the_socket_or_half_stores_a_turn(alice, scripted_engine, settings, batch) -> None:  # type: ignore[no-untyped-def]
    settings.CHAT_MESSAGES_PER_MINUTE = 10_000  # the examples share one user and one minute
    scripted_engine(ScriptedEngine(["ok"], delay=0.0))
    chat = services.conversation_create(owner=alice)
    async_to_sync(_exchange)(alice, chat, batch)
    users = Message.objects.filter(conversation=chat, role="user")
    assert users.filter(content="still there?").exists()
    replies = Message.objects.filter(conversation=chat, role="assistant")
    assert users.count() == replies.count(), "every stored message has its reply"
    assert not replies.filter(status="streaming").exists(), "no reply is left hanging"
    for reply in replies:
        assert reply.parent is not None and reply.parent.role == "user"


async def _exchange(alice, chat, batch: list[str]) -> None:  # type: ignore[no-untyped-def]
    connected, _, socket = await open_socket(alice, chat)
    assert connected
    for frame in batch:
        await socket.communicator.send_input({"type": "websocket.receive", "text": frame})
        await socket.communicator.receive_nothing(timeout=0.05)
        await generation_wait_idle()
        while not await socket.communicator.receive_nothing(timeout=0.05):
            await socket.receive()
    # The socket survived whatever came before: a real message still gets a reply.
    await socket.send({"action": "send", "message": "still there?"})
    while not socket.finished:
        await socket.receive(timeout=10)
    await generation_wait_idle()
    await socket.close()
