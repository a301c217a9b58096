"""Thumbs up or down on a reply, a reason on down, changeable; only on one's own replies."""

from __future__ import annotations

import pytest
from django.urls import reverse

from conversations import services
from conversations.models import Message, MessageFeedback
from tests.conversations.factories import finished_turn
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def reply(alice) -> Message:
    chat = services.conversation_create(owner=alice)
    turn = finished_turn(chat, "Tell me a fact", "The sun is cold.")
    return Message.objects.get(pk=turn.assistant_message.pk)


def post(user, reply: Message, **data: str):
    return client_for(user).post(reverse("message_feedback", args=[reply.public_id]), data, **HTMX)


def test_thumbs_down_asks_for_a_reason_and_keeps_it(alice, reply) -> None:
    body = post(alice, reply, rating="down").content.decode()
    assert 'aria-pressed="true" title="Bad reply"' in body
    assert "What was wrong?" in body, "a thumbs down offers the reasons"
    post(alice, reply, rating="down", reason="wrong", comment="The sun is hot.")
    feedback = MessageFeedback.objects.get(message=reply, user=alice)
    assert (feedback.rating, feedback.reason, feedback.comment) == ("down", "wrong", "The sun is hot.")


def test_feedback_can_be_changed_and_cleared(alice, reply) -> None:
    post(alice, reply, rating="down", reason="wrong")
    body = post(alice, reply, rating="up").content.decode()
    assert 'aria-pressed="true" title="Good reply"' in body and "What was wrong?" not in body
    feedback = MessageFeedback.objects.get(message=reply, user=alice)
    assert (feedback.rating, feedback.reason) == ("up", ""), "a thumbs up drops the old reason"
    post(alice, reply, rating="clear")
    assert not MessageFeedback.objects.filter(message=reply).exists()


def test_feedback_shows_again_after_a_reload(alice, reply) -> None:
    post(alice, reply, rating="down", reason="unhelpful")
    page = client_for(alice).get(reverse("conversation", args=[reply.conversation.public_id])).content.decode()
    assert 'aria-pressed="true" title="Bad reply"' in page
    assert '<option value="unhelpful" selected>' in page


def test_bad_feedback_is_refused_with_a_reason(alice, reply) -> None:
    response = post(alice, reply, rating="meh")
    assert response.status_code == 400 and "Choose thumbs up or thumbs down." in response.content.decode()
    response = post(alice, reply, rating="down", reason="because")
    assert response.status_code == 400 and "Choose one of the listed reasons." in response.content.decode()
    assert not MessageFeedback.objects.exists()


def test_feedback_is_only_for_finished_replies(alice, reply) -> None:
    question = reply.parent
    assert question is not None
    assert post(alice, question, rating="up").status_code == 400
    assert not MessageFeedback.objects.exists()


def test_a_stranger_cannot_rate_someone_elses_reply(bob, reply) -> None:
    assert post(bob, reply, rating="down").status_code == 404
    assert not MessageFeedback.objects.exists()
