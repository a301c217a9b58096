"""A chat's sampling settings: the model's defaults shown on a new chat, top_p edited and
kept per chat, and older chats keeping theirs through the migration that added top_p."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation

HTMX = {"HTTP_HX_REQUEST": "true"}
BEFORE_TOP_P = [("conversations", "0007_conversation_frequency_penalty")]
WITH_TOP_P = [("conversations", "0008_conversation_top_p")]


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bundled_chat(alice_client, settings) -> Conversation:
    """A chat started with New chat while the bundled model is the default."""
    settings.INFERENCE_MODEL = "bundled"
    settings.INFERENCE_SAMPLING_OVERRIDES = {}
    alice_client.post(reverse("conversation_new"))
    return Conversation.objects.get()


@pytest.mark.django_db
def test_a_new_chats_settings_show_the_models_sampling(alice_client, bundled_chat) -> None:
    page = alice_client.get(reverse("conversation", args=[bundled_chat.public_id])).content.decode()
    assert 'name="temperature" value="0.2"' in page
    assert 'name="top_p" value="0.9"' in page


@pytest.mark.django_db
def test_top_p_is_saved_checked_and_shown_as_saved(alice_client, bundled_chat) -> None:
    url = reverse("conversation_settings", args=[bundled_chat.public_id])
    form = {"model_name": bundled_chat.model_name, "system_prompt": "", "temperature": "0.2", "max_tokens": "64"}
    response = alice_client.post(url, {**form, "top_p": "0.50"}, **HTMX)
    assert response.status_code == 200 and 'name="top_p" value="0.5"' in response.content.decode()
    bundled_chat.refresh_from_db()
    assert bundled_chat.top_p == 0.5
    response = alice_client.post(url, form, **HTMX)
    assert 'name="top_p" value="0.5"' in response.content.decode(), "a form without it keeps and shows it"
    response = alice_client.post(url, {**form, "top_p": "0"}, **HTMX)
    assert response.status_code == 422 and b"greater than or equal to 0.01" in response.content
    bundled_chat.refresh_from_db()
    assert bundled_chat.top_p == 0.5


@pytest.mark.django_db(transaction=True)
def test_migrating_keeps_existing_chats_settings_and_their_top_p_of_1() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_TOP_P)
    try:
        old = executor.loader.project_state(BEFORE_TOP_P).apps
        owner = old.get_model("auth", "User").objects.create(username="alice")
        old.get_model("conversations", "Conversation").objects.create(
            owner=owner, model_name="tiny-llama", temperature=0.4, max_tokens=99, frequency_penalty=0.6
        )
        executor = MigrationExecutor(connection)
        executor.migrate(WITH_TOP_P)
        new = executor.loader.project_state(WITH_TOP_P).apps
        chat = new.get_model("conversations", "Conversation").objects.get()
        assert (chat.temperature, chat.max_tokens, chat.frequency_penalty, chat.top_p) == (0.4, 99, 0.6, 1.0)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
