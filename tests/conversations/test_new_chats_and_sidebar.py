"""Conversations as a user keeps them: a new chat is stored with its first message (with the
settings chosen before it), pins hold the top of the sidebar, the sidebar comes a page at a
time, and an empty chat offers starter prompts."""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse

from chatsite.asgi import application
from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Conversation
from conversations.starters import STARTERS
from tests.conversations.wsclient import ChatSocket
from tests.fakes import ScriptedEngine
from tests.helpers import client_for

HTMX = {"HTTP_HX_REQUEST": "true"}


def can_log_in(username: str, password: str) -> bool:
    response = Client().post(reverse("login"), {"username": username, "password": password})
    return response.status_code == 302


async def new_chat_socket(client: Client) -> ChatSocket:
    """The socket of the "New chat" page, in ``client``'s session."""
    headers = [
        (b"origin", b"http://127.0.0.1:8000"),
        (b"host", b"127.0.0.1:8000"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/c/new/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return ChatSocket(communicator)


@pytest.mark.django_db
def test_new_chat_opens_a_page_and_stores_nothing(alice) -> None:
    response = client_for(alice).get(reverse("conversation_new"))
    html = response.content.decode()
    assert response.status_code == 200 and 'ws-connect="/ws/c/new/"' in html
    assert Conversation.objects.count() == 0
    for starter in STARTERS:
        assert f'data-starter="{starter.prompt}"' in html, "an empty chat offers starter prompts"


@pytest.mark.django_db(transaction=True)
async def test_the_first_message_stores_the_chat_with_the_settings_chosen_before(alice, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(["Hi", " there", "!"], delay=0.005))
    client = await database_sync_to_async(client_for)(alice)
    socket = await new_chat_socket(client)  # the page's socket connects before settings are chosen
    chosen = {"model_name": "tiny-llama", "system_prompt": "Be brief.", "temperature": "0.3", "max_tokens": "7"}
    response = await database_sync_to_async(client.post)(reverse("new_chat_settings"), chosen, **HTMX)
    assert response.status_code == 200 and b"Saved." in response.content
    assert await Conversation.objects.acount() == 0, "choosing settings stores no chat"

    await socket.send({"action": "send", "message": "Hello new chat"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    chat = await Conversation.objects.aget()
    assert (chat.title, chat.system_prompt, chat.temperature, chat.max_tokens) == ("Hello new chat", "Be brief.", 0.3, 7)
    created = "".join(socket.frames)
    assert f'data-url="/c/{chat.public_id}/"' in created, "the page learns its chat's address"
    assert f'id="conv-{chat.public_id}"' in created, "the chat joins the sidebar"
    assert socket.texts[message_id] == "Hi there!"
    await socket.close()
    page = await database_sync_to_async(client.get)(reverse("conversation_new"))
    assert b'value="7"' not in page.content, "the next new chat starts from the defaults again"


@pytest.mark.django_db(transaction=True)
async def test_a_refused_first_message_leaves_no_chat_behind(alice) -> None:
    client = await database_sync_to_async(client_for)(alice)
    socket = await new_chat_socket(client)
    await socket.send({"action": "send", "message": "   "})
    await socket.receive()
    assert socket.errors == ["Type a message before sending."]
    await socket.send({"action": "stop"})
    assert await Conversation.objects.acount() == 0
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_stranger_cannot_open_a_new_chat_socket() -> None:
    communicator = WebsocketCommunicator(application, "/ws/c/new/", headers=[(b"origin", b"http://127.0.0.1:8000")])
    connected, code = await communicator.connect()
    assert not connected and code == 4404


def sidebar_ids(html: str) -> list[str]:
    return re.findall(r'<a id="conv-([0-9a-f-]+)"', html)


@pytest.mark.django_db
def test_pinned_chats_lead_the_sidebar(alice, bob) -> None:
    chats = [services.conversation_create(owner=alice) for _ in range(3)]
    client = client_for(alice)
    response = client.post(reverse("conversation_pin", args=[chats[0].public_id]), {"pinned": "true"}, **HTMX)
    assert b"Unpin" in response.content
    assert sidebar_ids(response.content.decode())[0] == str(chats[0].public_id), "the sidebar is re-sent, pin first"
    order = sidebar_ids(client.get(reverse("home")).content.decode())
    assert order == [str(c.public_id) for c in (chats[0], chats[2], chats[1])]
    client.post(reverse("conversation_pin", args=[chats[0].public_id]), {"pinned": "false"}, **HTMX)
    order = sidebar_ids(client.get(reverse("home")).content.decode())
    assert order == [str(c.public_id) for c in reversed(chats)]
    assert client_for(bob).post(reverse("conversation_pin", args=[chats[0].public_id]), {"pinned": "true"}).status_code == 404


@pytest.mark.django_db
def test_the_sidebar_loads_older_chats_a_page_at_a_time(alice, bob, settings) -> None:
    settings.CHAT_SIDEBAR_PAGE_SIZE = 3
    chats = [services.conversation_create(owner=alice) for _ in range(7)]
    services.conversation_create(owner=bob)
    client = client_for(alice)
    html = client.get(reverse("home")).content.decode()
    seen = sidebar_ids(html)
    pages = 1
    while "sidebar-sentinel" in html:
        after = re.search(r'\?after=([0-9a-f-]+)', html).group(1)
        html = client.get(reverse("conversation_sidebar"), {"after": after}, **HTMX).content.decode()
        seen += sidebar_ids(html)
        pages += 1
    assert pages == 3
    assert seen == [str(c.public_id) for c in reversed(chats)], "each of alice's chats once, newest first"
    assert client.get(reverse("conversation_sidebar"), {"after": "not-a-uuid"}).status_code == 200


@pytest.mark.django_db
def test_change_password(alice) -> None:
    client = client_for(alice)
    new = "a brand new pass phrase 7"
    response = client.post(
        reverse("password_change"),
        {"old_password": "correct horse battery", "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302 and response["Location"] == reverse("password_change_done")
    assert can_log_in("alice", new)
    wrong = client.post(reverse("password_change"), {"old_password": "nope", "new_password1": new, "new_password2": new})
    assert b"Your old password was entered incorrectly" in wrong.content


@pytest.mark.django_db
def test_password_reset_by_email(alice, mailoutbox) -> None:
    client = client_for(alice)
    assert client.post(reverse("account_email"), {"email": "alice@example.com"}).status_code == 302
    anonymous = Client()
    anonymous.post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert mailoutbox == [], "no mail for an address without an account"
    response = anonymous.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert response["Location"] == reverse("password_reset_done")
    [mail] = mailoutbox
    assert mail.to == ["alice@example.com"] and mail.subject == "Reset your Parley password"
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.body).group(1)
    form_page = anonymous.get(link, follow=True)
    new = "reset to this pass phrase 9"
    done = anonymous.post(form_page.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert done["Location"] == reverse("password_reset_complete")
    assert can_log_in("alice", new)
    assert b"This link has expired" in anonymous.get(link, follow=True).content, "a link works once"


@pytest.mark.django_db
def test_signup_takes_an_optional_email(client) -> None:
    client.post(
        reverse("signup"),
        {"username": "erin", "email": "erin@example.com", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"},
    )
    from django.contrib.auth.models import User

    assert User.objects.get(username="erin").email == "erin@example.com"
