"""Reads of conversations and messages. Every read is scoped to its owner."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from conversations.models import Conversation, Message


def conversation_list(*, owner: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=owner).order_by("-updated_at", "-id")


def conversation_get_for_owner(*, owner: AbstractBaseUser | AnonymousUser, public_id: UUID | str) -> Conversation:
    """The conversation, or Http404 for anyone but its owner."""
    return get_object_or_404(Conversation, public_id=public_id, owner_id=owner.pk)


def conversation_find_for_owner(*, owner_id: int | None, public_id: UUID | str) -> Conversation | None:
    if owner_id is None:
        return None
    return Conversation.objects.filter(public_id=public_id, owner_id=owner_id).first()


def message_path(*, leaf: Message | None) -> list[Message]:
    """The messages from the root of the tree down to ``leaf``, oldest first."""
    path: list[Message] = []
    node = leaf
    while node is not None:
        path.append(node)
        node = node.parent
    path.reverse()
    return path


def conversation_active_messages(*, conversation: Conversation) -> list[Message]:
    """The active branch of the conversation, oldest first (one query)."""
    by_id = {m.pk: m for m in Message.objects.filter(conversation=conversation)}
    path: list[Message] = []
    node_id = conversation.active_leaf_id
    while node_id is not None and node_id in by_id:
        node = by_id[node_id]
        path.append(node)
        node_id = node.parent_id
    path.reverse()
    return path


def conversation_streaming_messages(*, conversation: Conversation) -> list[Message]:
    return list(conversation.messages.filter(status=Message.Status.STREAMING))


@dataclass(frozen=True)
class StreamSnapshot:
    message_id: UUID
    content: str
    seq: int
    status: str


def message_stream_snapshot(*, message_pk: int) -> StreamSnapshot | None:
    row = Message.objects.filter(pk=message_pk).values("public_id", "content", "stream_seq", "status").first()
    if row is None:
        return None
    return StreamSnapshot(row["public_id"], row["content"], row["stream_seq"], row["status"])
