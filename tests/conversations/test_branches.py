"""Regenerate and edit make sibling branches; the switcher moves between them; the model sees one path."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.urls import reverse

from conversations import selectors, services
from conversations.generation import generation_wait_idle
from conversations.models import Conversation, Message
from tests.conftest import TINY_MODEL_DIR
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine
from tests.helpers import client_for

HTMX = {"HTTP_HX_REQUEST": "true"}


def finish(reply: Message, text: str) -> None:
    services.assistant_message_finish(
        message_pk=reply.pk, content=text, seq=1, finish_reason="stop", prompt_tokens=3, completion_tokens=2
    )


def turn(chat: Conversation, question: str, answer: str) -> services.Turn:
    started = services.turn_start(conversation=chat, text=question)
    finish(started.assistant_message, answer)
    return started


def shown(chat: Conversation) -> list[str]:
    chat.refresh_from_db()
    return [m.content for m in selectors.conversation_active_messages(conversation=chat)]


@pytest.mark.django_db
def test_regenerate_adds_a_sibling_and_switching_back_restores_the_first(chat, alice) -> None:
    first = turn(chat, "Name a colour", "Blue")
    again = services.reply_regenerate(conversation=chat, message_id=first.assistant_message.public_id)
    finish(again.assistant_message, "Green")
    assert again.assistant_message.parent_id == first.user_message.pk
    assert shown(chat) == ["Name a colour", "Green"]
    assert Message.objects.get(pk=first.assistant_message.pk).content == "Blue", "the old reply is kept"

    page = client_for(alice).get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert '<span class="branch-position">2 / 2</span>' in page

    response = client_for(alice).post(
        reverse("branch_switch", args=[chat.public_id]), {"message": first.assistant_message.public_id}, **HTMX
    )
    assert '<span class="branch-position">1 / 2</span>' in response.content.decode()
    assert "Blue" in response.content.decode() and "Green" not in response.content.decode()
    assert shown(chat) == ["Name a colour", "Blue"], "the choice survives a reload"


@pytest.mark.django_db
def test_editing_a_message_makes_a_sibling_and_keeps_the_original_branch(chat) -> None:
    first = turn(chat, "Capital of France?", "Paris")
    turn(chat, "And of Spain?", "Madrid")
    edited = services.message_edit(conversation=chat, message_id=first.user_message.public_id, text="Capital of Italy?")
    finish(edited.assistant_message, "Rome")
    assert edited.user_message.parent_id is None, "an edit of the first message is a second root"
    assert shown(chat) == ["Capital of Italy?", "Rome"]

    services.branch_switch(conversation=chat, message_id=first.user_message.public_id)
    assert shown(chat) == ["Capital of France?", "Paris", "And of Spain?", "Madrid"], "back to the newest leaf"
    views = selectors.conversation_message_page(conversation=chat, user=chat.owner).views
    assert (views[0].position, views[0].count, views[0].next_id) == (1, 2, edited.user_message.public_id)


@pytest.mark.django_db
def test_branching_is_refused_while_a_reply_streams_and_for_unknown_messages(chat) -> None:
    first = turn(chat, "hi", "hello")
    services.turn_start(conversation=chat, text="still going")
    with pytest.raises(ValidationError, match="Wait for the current reply"):
        services.reply_regenerate(conversation=chat, message_id=first.assistant_message.public_id)
    with pytest.raises(ValidationError, match="not in this conversation"):
        services.branch_switch(conversation=chat, message_id="not-a-uuid")
    assert Message.objects.count() == 4


@pytest.mark.django_db
def test_a_stranger_cannot_switch_branches(chat, bob) -> None:
    first = turn(chat, "hi", "hello")
    response = client_for(bob).post(
        reverse("branch_switch", args=[chat.public_id]), {"message": first.assistant_message.public_id}
    )
    assert response.status_code == 404


def decode(request) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    return str(tokenizer.decode(request.prompt_ids))


@pytest.mark.django_db(transaction=True)
async def test_over_the_socket_edit_then_regenerate_and_the_model_sees_only_the_active_path(
    alice, chat, scripted_engine
) -> None:
    engine = scripted_engine(ScriptedEngine(["An ", "answer."], delay=0.01))
    _, _, socket = await open_socket(alice, chat)
    for question in ["first question", "second question"]:
        socket.finished.clear()
        await socket.send({"action": "send", "message": question})
        await socket.until_finished()
        await generation_wait_idle()
    first = await Message.objects.filter(conversation=chat, role="user").order_by("id").afirst()
    assert first is not None

    socket.finished.clear()
    await socket.send({"action": "edit", "message_id": str(first.public_id), "message": "edited question"})
    new_reply = await socket.until_finished()
    await generation_wait_idle()
    relisted = [f for f in socket.frames if '<div id="messages" hx-swap-oob="innerHTML">' in f]
    assert relisted and '<span class="branch-position">2 / 2</span>' in relisted[-1], "the switcher appears at once"
    prompt = await database_sync_to_async(decode)(engine.requests[-1])
    assert "edited question" in prompt
    assert "first question" not in prompt and "second question" not in prompt, "other branches stay out of the prompt"

    socket.finished.clear()
    await socket.send({"action": "regenerate", "message_id": new_reply})
    await socket.until_finished()
    await generation_wait_idle()
    prompt = await database_sync_to_async(decode)(engine.requests[-1])
    assert "edited question" in prompt and "answer." not in prompt, (
        "a regenerated reply does not see the one it replaces"
    )
    await database_sync_to_async(chat.refresh_from_db)()
    path = await database_sync_to_async(selectors.conversation_active_messages)(conversation=chat)
    assert [m.content for m in path] == ["edited question", "An answer."]
    assert await Message.objects.filter(conversation=chat).acount() == 7, "nothing was overwritten"
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_cannot_branch_from_another_conversations_message(alice, bob, chat, scripted_engine) -> None:
    first = await database_sync_to_async(turn)(chat, "alice's question", "alice's answer")
    bobs = await database_sync_to_async(services.conversation_create)(owner=bob)
    _, _, socket = await open_socket(bob, bobs)
    await socket.send({"action": "regenerate", "message_id": str(first.assistant_message.public_id)})
    await socket.receive()
    await socket.send({"action": "edit", "message_id": str(first.user_message.public_id), "message": "mine now"})
    await socket.receive()
    assert socket.errors == ["That reply is not in this conversation.", "That message is not in this conversation."]
    assert await Message.objects.acount() == 2, "nothing was created anywhere"
    await socket.close()
