"""Each reply says how it was written (time to first token, tokens per second, the model and
its weight form), and a reply that stopped at its token limit can be continued in place."""

from __future__ import annotations

import pytest

from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from inference.engine.loading import load_model
from tests.conftest import ROOT, TINY_MODEL_DIR
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.django_db(transaction=True)

PIECES = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "fox."]


@pytest.fixture
def chat(chat):
    """The shared new chat, greedy and with replies of at most four tokens."""
    services.conversation_update_settings(
        conversation=chat, model_name=chat.model_name, system_prompt="", temperature=0.0, max_tokens=4
    )
    return chat


async def test_a_reply_shows_its_speed_model_and_weights(alice, chat) -> None:
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Hello there"})
    message_id = await socket.until_finished(timeout=60)
    await generation_wait_idle()
    reply = await Message.objects.aget(public_id=message_id)
    assert reply.weights == "fp32", "the tests serve the tiny model on exact weights"
    assert reply.first_token_seconds is not None and reply.first_token_seconds > 0
    assert reply.decode_seconds is not None and reply.decode_seconds > 0
    assert reply.tokens_per_second is not None and reply.tokens_per_second > 0
    shown = socket.frames[-2] + socket.frames[-1]
    assert f"{reply.first_token_seconds:.2f} s to first token" in shown
    assert f"{reply.tokens_per_second:.1f} tokens/s" in shown
    assert "fp32" in shown and chat.model_name in shown
    await socket.close()


async def test_a_reply_cut_at_its_limit_continues_in_the_same_message(alice, chat, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine(PIECES, delay=0.005))
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Tell me a story"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    first = await Message.objects.aget(public_id=message_id)
    assert first.finish_reason == "length" and first.content == "Once upon a time "
    assert 'value="continue"' in socket.frames[-2] + socket.frames[-1], "the reply offers Continue"

    socket.finished.clear()
    await socket.send({"action": "continue", "message_id": message_id})
    assert await socket.until_finished(message_id) == message_id
    await generation_wait_idle()
    continued = await Message.objects.aget(public_id=message_id)
    assert continued.content == "Once upon a time Once upon a time ", "the new text follows the old, same message"
    assert socket.texts[message_id] == continued.content, "the page shows the whole reply once"
    assert continued.completion_tokens == 8 and continued.stream_seq == 8
    assert await Message.objects.filter(conversation=chat).acount() == 2, "no new message"

    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=ROOT / ".cache" / "models")
    prompt = loaded.tokenizer.decode(engine.requests[1].prompt_ids)
    assert prompt.rstrip().endswith("Once upon a time"), "the model goes on from its own text, not a new turn"
    await socket.close()


async def test_only_a_reply_stopped_at_its_limit_can_be_continued(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(PIECES[:2], delay=0.005))
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Short, please"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    assert 'value="continue"' not in socket.frames[-2] + socket.frames[-1]
    await socket.send({"action": "continue", "message_id": message_id})
    await socket.receive()
    assert socket.errors == ["Only a reply that stopped at its token limit can be continued."]
    await socket.close()
