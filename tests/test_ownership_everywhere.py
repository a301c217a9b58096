"""Every route that takes an object's id answers a stranger with 404 and changes
nothing: pages and htmx partials (found by walking the URL map, so a new route is
covered the day it is added), the conversation websocket, and the API."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from api.keys.services import api_key_create
from conversations import services
from conversations.models import Attachment, Conversation, Message
from tests.conversations.wsclient import open_socket

pytestmark = pytest.mark.django_db(transaction=True)


# A password reset link names a user and carries a token: it is not an object of
# anyone's, and a forged one is refused by Django's token check (the test below).
RESET_CONFIRM = "accounts/reset/<uidb64>/<token>/"


def routes(patterns=None, prefix: str = ""):
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        text = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if not text.startswith(("admin/", "v1/")):
                yield from routes(pattern.url_patterns, text)
        elif text.startswith("^admin/"):
            continue  # a redirect into the admin, which only staff may open
        elif isinstance(pattern, URLPattern) and "<" in text and text != RESET_CONFIRM:
            yield text


@pytest.fixture
def alices_things(alice):
    chat = services.conversation_create(owner=alice)
    services.conversation_rename(conversation=chat, title="Alice's secrets")
    reply = services.turn_start(conversation=chat, text="my private question").assistant_message
    services.assistant_message_finish(
        message_pk=reply.pk,
        content="a private answer",
        seq=1,
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=3,
    )
    key = api_key_create(owner=alice, name="alice's laptop").api_key
    attachment = Attachment.objects.create(owner=alice, name="Alice's notes.txt", text="private notes", size=13)
    return {
        "conversation_id": chat.public_id,
        "message_id": reply.public_id,
        "key_id": key.public_id,
        "attachment_id": attachment.public_id,
    }


def test_the_walk_finds_every_owned_route() -> None:
    found = set(routes())
    assert "c/<uuid:conversation_id>/" in found and "api/keys/<uuid:key_id>/revoke/" in found
    assert "m/<uuid:message_id>/feedback/" in found


def test_every_page_with_an_id_is_404_for_a_stranger(bob, alice, alices_things) -> None:
    client = Client()
    client.force_login(bob)
    checked = []
    for route in routes():
        url = "/" + route
        for name, value in alices_things.items():
            url = url.replace(f"<uuid:{name}>", str(value))
        assert "<" not in url, f"the sweep does not know how to fill {route}: add its id to alices_things"
        for method in ("get", "post"):
            response = getattr(client, method)(url, {"title": "bob was here", "rating": "down", "message_id": "x"})
            assert response.status_code in (404, 405), f"{method.upper()} {url} gave {response.status_code}"
            if response.status_code == 404:
                checked.append(f"{method} {route}")
            assert b"Alice" not in response.content and b"private" not in response.content
    assert len(checked) >= len(list(routes())), checked
    chat = Conversation.objects.get(public_id=alices_things["conversation_id"])
    assert chat.title == "Alice's secrets" and chat.messages.count() == 2
    assert not Message.objects.get(public_id=alices_things["message_id"]).feedback.exists()


def test_a_forged_reset_link_for_someone_else_sets_no_password(bob, alice) -> None:
    assert RESET_CONFIRM in {prefix + str(p.pattern) for prefix, p in _all_patterns()}
    client = Client()
    client.force_login(bob)
    uid = urlsafe_base64_encode(force_bytes(alice.pk))
    url = f"/accounts/reset/{uid}/forged-token/"
    page = client.get(url, follow=True)
    assert page.status_code == 200 and b"new_password1" not in page.content
    client.post(url, {"new_password1": "bob-owns-this-1", "new_password2": "bob-owns-this-1"}, follow=True)
    alice.refresh_from_db()
    assert not alice.check_password("bob-owns-this-1")


def _all_patterns(patterns=None, prefix: str = ""):
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _all_patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix, pattern


async def test_the_websocket_is_404_for_a_stranger(bob, alice, alices_things) -> None:
    chat = await Conversation.objects.aget(public_id=alices_things["conversation_id"])
    connected, code, _ = await open_socket(bob, chat)
    assert (connected, code) == (False, 4404)


def test_the_api_never_shows_another_users_transcripts_or_keys(bob, alice, alices_things) -> None:
    bobs_key = api_key_create(owner=bob, name="bob").secret
    client = Client(HTTP_AUTHORIZATION=f"Bearer {bobs_key}")
    for url in ("/v1/files/" + str(alices_things["conversation_id"]), "/v1/fine_tuning/jobs/ftjob-nothere"):
        response = client.get(url)
        assert response.status_code in (403, 404), url
        assert set(json.loads(response.content)["error"]) == {"message", "type", "param", "code"}
    listing = client.get("/v1/models")
    assert listing.status_code == 200 and b"Alice" not in listing.content
