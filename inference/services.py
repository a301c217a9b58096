"""Writes on the inference side that are not tied to one conversation."""

from __future__ import annotations

from django.utils import timezone

from conversations.models import Message


def streams_recover_abandoned(*, reason: str) -> int:
    """End every reply still marked streaming; their text so far is kept."""
    return Message.objects.filter(status=Message.Status.STREAMING).update(
        status=Message.Status.ERROR,
        finish_reason=Message.FinishReason.ERROR,
        error=reason,
        finished_at=timezone.now(),
    )
