"""Accounts and the conversation pages, including their htmx partials."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Conversation

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_a_newcomer_signs_up_and_lands_in_the_app(client) -> None:
    response = client.post(
        reverse("signup"),
        {"username": "carol", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"},
        follow=True,
    )
    assert response.status_code == 200
    assert response.context["user"].username == "carol"
    assert b"Start a new chat" in response.content


def test_signup_shows_what_was_wrong(client) -> None:
    response = client.post(reverse("signup"), {"username": "dave", "password1": "abc", "password2": "abd"})
    assert response.status_code == 200
    assert b"The two password fields didn" in response.content


def test_login_and_logout(client, alice) -> None:
    response = client.post(reverse("login"), {"username": "alice", "password": "correct horse battery"}, follow=True)
    assert response.context["user"] == alice
    response = client.post(reverse("logout"), follow=True)
    assert not response.context["user"].is_authenticated


def test_pages_need_a_login(client, chat) -> None:
    for url in [reverse("home"), reverse("conversation", args=[chat.public_id])]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_new_chat_opens_a_conversation(alice_client, alice) -> None:
    response = alice_client.post(reverse("conversation_new"), **HTMX)
    conversation = Conversation.objects.get(owner=alice)
    assert response["HX-Redirect"] == reverse("conversation", args=[conversation.public_id])


def test_the_page_shows_the_conversation_and_the_composer(alice_client, chat) -> None:
    services.turn_start(conversation=chat, text="What is **bold**?")
    response = alice_client.get(reverse("conversation", args=[chat.public_id]))
    page = response.content.decode()
    assert f'ws-connect="/ws/c/{chat.public_id}/"' in page
    assert 'aria-label="Message"' in page or '<label for="composer-input"' in page
    assert "What is **bold**?" in page, "user text is shown as typed"
    assert ">Stop</button>" in page, "a reply still streaming offers Stop after a reload"


def test_a_finished_reply_is_rendered_as_sanitized_markdown(alice_client, chat) -> None:
    reply = services.turn_start(conversation=chat, text="hi").assistant_message
    services.assistant_message_finish(
        message_pk=reply.pk,
        content="Here is **bold** and code:\n\n```python\nprint('<b>')\n```\n<script>alert(1)</script>",
        seq=1,
        finish_reason="stop",
        prompt_tokens=5,
        completion_tokens=9,
    )
    page = alice_client.get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert "<strong>bold</strong>" in page
    assert '<code class="language-python">' in page and '<span class="nb">print</span>' in page, "code is highlighted"
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert '<div class="code-block"><button type="button" class="code-copy" data-copy-code>Copy</button><pre>' in page
    assert "<script>alert(1)</script>" not in page
    assert "9 tokens" in page


def test_rename_updates_the_sidebar_and_header(alice_client, chat) -> None:
    response = alice_client.post(reverse("conversation_rename", args=[chat.public_id]), {"title": "Bread"}, **HTMX)
    body = response.content.decode()
    assert f'id="conv-{chat.public_id}-title"' in body and 'hx-swap-oob="true">Bread<' in body
    chat.refresh_from_db()
    assert chat.title == "Bread"
    response = alice_client.post(reverse("conversation_rename", args=[chat.public_id]), {"title": "  "}, **HTMX)
    assert "cannot be empty" in response.content.decode()


def test_delete_removes_it_and_goes_home(alice_client, chat) -> None:
    response = alice_client.post(reverse("conversation_delete", args=[chat.public_id]), **HTMX)
    assert response["HX-Redirect"] == reverse("home")
    assert not Conversation.objects.exists()


def test_the_delete_button_asks_for_confirmation(alice_client, chat) -> None:
    page = alice_client.get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert 'hx-confirm="Delete this conversation? This cannot be undone."' in page


def test_settings_are_saved_and_validated(alice_client, chat) -> None:
    url = reverse("conversation_settings", args=[chat.public_id])
    good = {
        "model_name": "smollm2-135m-instruct",
        "system_prompt": "Be terse.",
        "temperature": "0.2",
        "max_tokens": "64",
    }
    response = alice_client.post(url, good, **HTMX)
    assert response.status_code == 200 and b"Saved." in response.content
    chat.refresh_from_db()
    assert (chat.model_name, chat.system_prompt, chat.temperature, chat.max_tokens) == (
        "smollm2-135m-instruct",
        "Be terse.",
        0.2,
        64,
    )
    bad = {**good, "temperature": "7", "model_name": "gpt-9"}
    response = alice_client.post(url, bad, **HTMX)
    assert response.status_code == 422
    assert b"less than or equal to 2" in response.content
    assert b"Select a valid choice" in response.content
    chat.refresh_from_db()
    assert chat.temperature == 0.2, "a bad form changes nothing"


def test_the_repetition_penalty_is_a_setting_the_next_reply_uses(alice_client, chat) -> None:
    from conversations.generation import job_context_load

    url = reverse("conversation_settings", args=[chat.public_id])
    page = alice_client.get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert 'name="frequency_penalty" value="0.1"' in page, "new chats start with the default"
    good = {"model_name": "tiny-llama", "system_prompt": "", "temperature": "0.7", "max_tokens": "64"}
    assert alice_client.post(url, {**good, "frequency_penalty": "1.25"}, **HTMX).status_code == 200
    chat.refresh_from_db()
    assert chat.frequency_penalty == 1.25
    assert alice_client.post(url, good, **HTMX).status_code == 200
    chat.refresh_from_db()
    assert chat.frequency_penalty == 1.25, "a form without the field keeps it"
    response = alice_client.post(url, {**good, "frequency_penalty": "2.5"}, **HTMX)
    assert response.status_code == 422 and b"less than or equal to 2" in response.content
    turn = services.turn_start(conversation=chat, text="Hello")
    context = job_context_load(message_pk=turn.assistant_message.pk)
    assert context is not None and context.frequency_penalty == 1.25


def test_the_model_picker_lists_the_bundled_and_configured_models(alice_client, chat) -> None:
    page = alice_client.get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert '<option value="tiny-llama" selected>tiny-llama</option>' in page
    assert '<option value="smollm2-135m-instruct">SmolLM2-135M-Instruct</option>' in page


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("conversation", "get"),
        ("conversation_rename", "post"),
        ("conversation_delete", "post"),
        ("conversation_settings", "post"),
    ],
)
def test_anyone_but_the_owner_gets_404(bob, chat, name, method) -> None:
    client = Client()
    client.force_login(bob)
    response = getattr(client, method)(reverse(name, args=[chat.public_id]), {"title": "mine now"})
    assert response.status_code == 404
    chat.refresh_from_db()
    assert chat.title == ""


def test_the_sidebar_lists_only_my_conversations(alice_client, alice, bob) -> None:
    mine = services.conversation_create(owner=alice)
    services.conversation_rename(conversation=mine, title="Mine")
    theirs = services.conversation_create(owner=bob)
    services.conversation_rename(conversation=theirs, title="Theirs")
    page = alice_client.get(reverse("home")).content.decode()
    assert "Mine" in page and "Theirs" not in page


def test_login_attempts_are_throttled(client, alice) -> None:
    for _ in range(4):
        response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
        assert response.status_code == 200 and b"Please enter a correct username" in response.content
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 429, "the fifth failure locks the account on this address"
    response = client.post(reverse("login"), {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content


def test_pages_carry_a_content_security_policy(alice_client, chat) -> None:
    response = alice_client.get(reverse("conversation", args=[chat.public_id]))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in response.content.decode(), "no inline scripts"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
