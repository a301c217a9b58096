"""Search across one's own conversations: titles and message text, highlighted, never anyone else's."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bench.search import seed_conversations
from conversations import selectors, services
from conversations.models import Conversation, Message
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def chat_with(owner, title: str, *texts: str) -> Conversation:
    chat = services.conversation_create(owner=owner)
    chat.title = title
    chat.save()
    for text in texts:
        Message.objects.create(conversation=chat, role="user", content=text)
    return chat


def test_it_finds_titles_and_message_text_and_highlights_the_words(alice) -> None:
    bread = chat_with(alice, "Baking bread", "How long should sourdough rise?")
    soup = chat_with(alice, "Dinner", "A recipe for tomato soup with fresh BREAD on the side")
    chat_with(alice, "Taxes", "When are they due?")
    hits = selectors.conversation_search(owner=alice, query="bread")
    assert {hit.conversation.pk for hit in hits} == {bread.pk, soup.pk}
    by_pk = {hit.conversation.pk: hit for hit in hits}
    assert by_pk[bread.pk].title_html == "Baking <mark>bread</mark>"
    assert "<mark>BREAD</mark>" in by_pk[soup.pk].snippets[0]


def test_every_word_must_match_and_short_queries_find_nothing(alice) -> None:
    chat_with(alice, "Trip", "train to Lyon", "then a bus")
    assert len(selectors.conversation_search(owner=alice, query="train lyon")) == 1
    assert selectors.conversation_search(owner=alice, query="train paris") == []
    assert selectors.conversation_search(owner=alice, query="t") == []


def test_it_never_shows_another_users_conversations(alice, bob) -> None:
    chat_with(alice, "Secret plans", "the launch code is swordfish")
    mine = chat_with(bob, "Fish", "swordfish recipes")
    hits = selectors.conversation_search(owner=bob, query="swordfish")
    assert [hit.conversation.pk for hit in hits] == [mine.pk]
    body = client_for(bob).get(reverse("conversation_search"), {"q": "launch code"}, **HTMX).content.decode()
    assert "Secret plans" not in body and "No conversation matches" in body


def test_matches_are_escaped_before_they_are_marked(alice) -> None:
    chat_with(alice, "<script>alert(1)</script> amp", "Tom & Jerry <b>script</b>")
    body = client_for(alice).get(reverse("conversation_search"), {"q": "script"}, **HTMX).content.decode()
    assert "<script>" not in body and "<b>" not in body
    assert "&lt;<mark>script</mark>&gt;alert(1)" in body
    hits = selectors.conversation_search(owner=alice, query="amp")
    assert hits[0].title_html == "&lt;script&gt;alert(1)&lt;/script&gt; <mark>amp</mark>", "no mark inside an entity"


def test_the_sidebar_has_a_live_search_box(alice) -> None:
    page = client_for(alice).get(reverse("home")).content.decode()
    assert 'hx-get="/search/"' in page and 'hx-target="#search-results"' in page
    chat_with(alice, "Gardening", "tomatoes")
    full = client_for(alice).get(reverse("conversation_search"), {"q": "tomato"}).content.decode()
    assert "Gardening" in full and "<mark>tomato</mark>es" in full


def test_it_finds_the_one_match_among_thousands_of_conversations(alice, bob) -> None:
    chats = seed_conversations([alice, bob], 4000, model_name="tiny-llama")
    hits = selectors.conversation_search(owner=alice, query="zebra crossing")
    assert [hit.conversation.pk for hit in hits] == [chats[2].pk]
    assert "<mark>zebra</mark> <mark>crossing</mark>" in hits[0].snippets[0]
