"""Writes on the inference side that are not tied to one conversation."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from conversations.models import Message

WORKER_STOPPED = "The generation worker stopped while writing this reply. Send your message again to retry."


def _streaming_fail(*, pk: int | None = None, reason: str) -> int:
    """Mark streaming replies (one, or all) as failed; their text so far is kept."""
    streaming = Message.objects.filter(status=Message.Status.STREAMING)
    if pk is not None:
        streaming = streaming.filter(pk=pk)
    return streaming.update(
        status=Message.Status.ERROR, finish_reason=Message.FinishReason.ERROR, error=reason, finished_at=timezone.now()
    )


def streams_recover_abandoned(*, reason: str) -> int:
    """End every reply still marked streaming (run before a single server starts)."""
    return _streaming_fail(reason=reason)


def streams_fail_stale(*, conversation_pk: int | None = None) -> list[str]:
    """Fail streaming replies whose job stopped beating (its worker died).

    Returns the public ids of the replies it ended, so open sockets can show them.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.INFERENCE_STALE_AFTER_SECONDS)
    stale = Message.objects.filter(status=Message.Status.STREAMING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    )
    if conversation_pk is not None:
        stale = stale.filter(conversation_id=conversation_pk)
    ended: list[str] = []
    for message in stale:
        if _streaming_fail(pk=message.pk, reason=WORKER_STOPPED):
            ended.append(str(message.public_id))
    return ended
