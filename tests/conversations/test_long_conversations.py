"""Long conversations open with only their latest messages; older ones load on scrolling up."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Conversation
from tests.conversations.factories import finished_turn

pytestmark = pytest.mark.django_db


@pytest.fixture
def long_chat(alice, settings) -> Conversation:
    settings.CHAT_INITIAL_MESSAGES = 10
    chat = services.conversation_create(owner=alice)
    for index in range(13):
        finished_turn(chat, f"question {index}", f"answer {index}")
    return chat


def test_it_opens_with_the_latest_messages_and_a_sentinel_for_older_ones(alice, long_chat) -> None:
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("conversation", args=[long_chat.public_id])).content.decode()
    assert page.count('<article class="msg ') == 10
    assert "question 8<" in page and "answer 12<" in page and "answer 7<" not in page
    sentinel = re.search(r'hx-get="([^"]+)"\s+hx-trigger="intersect once"', page)
    assert sentinel, "a sentinel at the top fetches the previous page"

    older = client.get(sentinel.group(1).replace("&amp;", "&")).content.decode()
    assert older.count('<article class="msg ') == 10
    assert "question 3<" in older and "answer 7<" in older and "question 8<" not in older
    last = re.search(r'hx-get="([^"]+)"', older)
    assert last
    oldest = client.get(last.group(1)).content.decode()
    assert oldest.count('<article class="msg ') == 6 and "question 0<" in oldest and "answer 2<" in oldest
    assert "hx-trigger" not in oldest, "no sentinel once the first message is shown"


def test_a_stranger_cannot_page_through_it(bob, long_chat) -> None:
    client = Client()
    client.force_login(bob)
    assert client.get(reverse("conversation_messages", args=[long_chat.public_id])).status_code == 404
