"""Frames the conversation socket refuses to parse: too deep, too long. Each gets a
sentence in the composer, and the socket keeps working."""

from __future__ import annotations

import pytest

from conversations.consumers import frame_chars_limit
from conversations.generation import generation_wait_idle
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.django_db(transaction=True)


async def _still_chats(socket) -> None:
    await socket.send({"action": "send", "message": "Are you still there?"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    assert socket.finished[message_id] == "complete"


async def test_a_frame_nested_50000_levels_deep_is_refused_with_a_sentence(alice, chat, scripted_engine, settings) -> None:
    settings.CHAT_MAX_MESSAGE_CHARS = 20_000  # frames up to 121,024 characters: the nesting is what is refused
    scripted_engine(ScriptedEngine(["Yes."]))
    _, _, socket = await open_socket(alice, chat)
    await socket.communicator.send_to(text_data='{"action": "send", "message": ' + "[" * 50_000 + "]" * 50_000 + "}")
    await socket.receive()
    assert socket.errors == ["That message is nested more than 32 levels deep; send plain text."]
    await _still_chats(socket)
    await socket.close()


async def test_a_frame_over_the_size_limit_is_refused_unread(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(["Yes."]))
    _, _, socket = await open_socket(alice, chat)
    await socket.communicator.send_to(text_data=" " * (frame_chars_limit() + 1))
    await socket.receive()
    assert socket.errors == [f"That message is over the limit of {frame_chars_limit():,} characters a frame."]
    await _still_chats(socket)
    await socket.close()
