"""End to end on the real bundled model: a question over the websocket, a right answer."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from tests.conversations.wsclient import open_socket

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


async def test_the_bundled_model_answers_a_question_over_the_socket(alice, settings) -> None:
    settings.INFERENCE_MODEL = "bundled"
    chat = await database_sync_to_async(services.conversation_create)(owner=alice)
    chat.temperature = 0.0
    chat.max_tokens = 40
    await chat.asave()
    assert chat.model_name == "smollm2-135m-instruct"

    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "What is the capital of France?"})
    message_id = await socket.until_finished(timeout=180)
    await generation_wait_idle(timeout=180)

    reply = await Message.objects.aget(public_id=message_id)
    assert "Paris" in reply.content
    assert socket.texts[message_id] == reply.content
    assert reply.finish_reason == "stop"
    assert reply.prompt_tokens and reply.prompt_tokens > 20
    assert reply.completion_tokens and 3 <= reply.completion_tokens <= 40
    await socket.close()
