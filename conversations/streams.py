"""Services for replies whose job died: writes across conversations, run by the reaper
(chatsite/reaper.py), a socket's watchdog and ``manage.py recover_streams``. The writes
tied to one conversation are in services.py."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class EndedStream:
    conversation_id: str
    message_id: str


def streams_fail_stale(*, conversation_pk: int | None = None) -> list[EndedStream]:
    """Fail streaming replies whose job stopped beating (its worker died).

    Returns the replies it ended, with their conversations' public ids, so the sockets
    open on those conversations can show them.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.INFERENCE_STALE_AFTER_SECONDS)
    stale = Message.objects.filter(status=Message.Status.STREAMING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    )
    if conversation_pk is not None:
        stale = stale.filter(conversation_id=conversation_pk)
    ended: list[EndedStream] = []
    for pk, message_id, conversation_id in stale.values_list("pk", "public_id", "conversation__public_id"):
        if _streaming_fail(pk=pk, reason=WORKER_STOPPED):
            ended.append(EndedStream(conversation_id=str(conversation_id), message_id=str(message_id)))
    return ended
