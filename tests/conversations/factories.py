"""Conversations built through the services, as a chat would leave them."""

from __future__ import annotations

from conversations import services
from conversations.models import Conversation


def finished_turn(conversation: Conversation, text: str, reply: str) -> services.Turn:
    """Send ``text`` and finish its reply with ``reply``, as a completed generation does."""
    turn = services.turn_start(conversation=conversation, text=text)
    services.assistant_message_finish(
        message_pk=turn.assistant_message.pk,
        content=reply,
        seq=1,
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
    )
    return turn
