"""Take a conversation along (Markdown, JSON chat format), and delete them all from Settings."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from conversations import services
from conversations.models import Conversation, Message
from tests.conversations.factories import finished_turn
from tests.helpers import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat(chat) -> Conversation:
    """The shared new chat with two finished turns."""
    for question, answer in [("What is 2+2?", "4"), ("And 3+3?", "6")]:
        finished_turn(chat, question, answer)
    return chat


def test_json_export_is_the_active_branch_in_the_chat_training_format(alice, chat) -> None:
    last = Message.objects.filter(conversation=chat, role="assistant").last()
    assert last is not None
    retry = services.reply_regenerate(conversation=chat, message_id=last.public_id)
    services.assistant_message_finish(
        message_pk=retry.assistant_message.pk,
        content="Six.",
        seq=1,
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
    )
    response = client_for(alice).get(reverse("export_json", args=[chat.public_id]))
    assert response["Content-Disposition"] == 'attachment; filename="what-is-22.json"'
    assert json.loads(response.content) == {
        "messages": [
            {"role": "system", "content": chat.system_prompt},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "Six."},
        ]
    }


def test_the_json_export_parses_as_fine_tuning_data(alice, chat) -> None:
    from inference.engine.datasets import parse_dataset

    exported = json.loads(client_for(alice).get(reverse("export_json", args=[chat.public_id])).content)
    parsed = parse_dataset(json.dumps(exported).encode() + b"\n")
    assert parsed.ok and parsed.format == "chat" and len(parsed.examples) == 1


def test_markdown_export_reads_as_a_transcript(alice, chat) -> None:
    response = client_for(alice).get(reverse("export_markdown", args=[chat.public_id]))
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/markdown")
    assert text.startswith("# What is 2+2?\n")
    assert "## You\n\nWhat is 2+2?\n\n## Assistant\n\n4\n" in text
    assert text.index("And 3+3?") < text.index("6")


def test_a_stranger_cannot_export(bob, chat) -> None:
    assert client_for(bob).get(reverse("export_json", args=[chat.public_id])).status_code == 404
    assert client_for(bob).get(reverse("export_markdown", args=[chat.public_id])).status_code == 404


def test_the_conversation_page_links_both_downloads(alice, chat) -> None:
    page = client_for(alice).get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert reverse("export_json", args=[chat.public_id]) in page
    assert reverse("export_markdown", args=[chat.public_id]) in page


def test_settings_tell_users_transcripts_may_be_reviewed(alice, chat) -> None:
    page = client_for(alice).get(reverse("account_settings")).content.decode()
    assert "Transcripts may be reviewed" in page
    assert "You have 1 conversation." in page


def test_deleting_all_conversations_needs_the_word_and_spares_others(alice, bob, chat) -> None:
    services.conversation_create(owner=alice)
    kept = services.conversation_create(owner=bob)
    refused = client_for(alice).post(reverse("conversations_delete_all"), {"confirm": "yes"})
    assert refused.status_code == 400 and "Type the word delete in the box to confirm." in refused.content.decode()
    assert Conversation.objects.filter(owner=alice).count() == 2

    response = client_for(alice).post(reverse("conversations_delete_all"), {"confirm": "delete"}, follow=True)
    assert "Deleted 2 conversations." in response.content.decode()
    assert not Conversation.objects.filter(owner=alice).exists()
    assert not Message.objects.filter(conversation__owner=alice).exists()
    assert Conversation.objects.filter(pk=kept.pk).exists(), "other people's conversations stay"
