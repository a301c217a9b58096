"""Reads of conversations and messages. Every read is scoped to its owner."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from conversations.attachments import with_attachments
from conversations.models import Attachment, Conversation, Message, MessageFeedback, UserPreferences
from inference.engine.prompt import CUT_FROM


def conversation_list(*, owner: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=owner).order_by("-updated_at", "-id")


@dataclass(frozen=True)
class SidebarPage:
    pinned: list[Conversation]  # on the first page only
    recent: list[Conversation]
    more_after: str | None  # the public id to load the next page after; None at the end


def conversation_sidebar(*, owner: AbstractBaseUser | AnonymousUser, after: str | None = None) -> SidebarPage:
    """The sidebar a page at a time: the pinned conversations, then the others, most
    recently active first, ``CHAT_SIDEBAR_PAGE_SIZE`` at a time after the one ``after``."""
    size = settings.CHAT_SIDEBAR_PAGE_SIZE
    mine = Conversation.objects.filter(owner_id=owner.pk)
    recent = mine.filter(pinned_at__isnull=True).order_by("-updated_at", "-id")
    pinned: list[Conversation] = []
    if after:
        try:
            last = mine.filter(public_id=after).values("updated_at", "id").first()
        except ValidationError:
            last = None  # not a UUID
        if last is None:
            return SidebarPage([], [], None)
        older = Q(updated_at__lt=last["updated_at"]) | Q(updated_at=last["updated_at"], id__lt=last["id"])
        recent = recent.filter(older)
    else:
        pinned = list(mine.filter(pinned_at__isnull=False).order_by("-pinned_at", "-id"))
    rows = list(recent[: size + 1])
    more = str(rows[size - 1].public_id) if len(rows) > size else None
    return SidebarPage(pinned, rows[:size], more)


def conversation_get_for_owner(*, owner: AbstractBaseUser | AnonymousUser, public_id: UUID | str) -> Conversation:
    """The conversation, or Http404 for anyone but its owner."""
    return get_object_or_404(Conversation, public_id=public_id, owner_id=owner.pk)


def conversation_find_for_owner(*, owner_id: int | None, public_id: UUID | str) -> Conversation | None:
    if owner_id is None:
        return None
    return Conversation.objects.filter(public_id=public_id, owner_id=owner_id).first()


def message_path(*, leaf: Message | None) -> list[Message]:
    """The messages from the root of the tree down to ``leaf``, oldest first.

    One query for the whole conversation, then a walk up the parent links in memory:
    each turn rebuilds its prompt this way, and a query per ancestor grew with the
    conversation's length.
    """
    if leaf is None:
        return []
    by_id = {m.pk: m for m in Message.objects.filter(conversation_id=leaf.conversation_id)}
    by_id[leaf.pk] = leaf
    return _walk_up(by_id, leaf.pk)


def _walk_up(by_id: dict[int, Message], leaf_id: int | None) -> list[Message]:
    path: list[Message] = []
    node_id = leaf_id
    while node_id is not None and node_id in by_id:
        node = by_id[node_id]
        path.append(node)
        node_id = node.parent_id
    path.reverse()
    return path


def conversation_active_messages(*, conversation: Conversation) -> list[Message]:
    """The active branch of the conversation, oldest first (one query)."""
    by_id = {m.pk: m for m in Message.objects.filter(conversation=conversation)}
    return _walk_up(by_id, conversation.active_leaf_id)


def owner_streaming_count(*, owner_id: int) -> int:
    """Replies being written for this user now, in all their conversations."""
    return Message.objects.filter(
        conversation__owner_id=owner_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
    ).count()


def streaming_reply_count() -> int:
    """Replies being written now, for everyone (the status page)."""
    return Message.objects.filter(status=Message.Status.STREAMING).count()


def conversation_streaming_messages(*, conversation: Conversation) -> list[Message]:
    return list(conversation.messages.filter(status=Message.Status.STREAMING))


@dataclass(frozen=True)
class StreamSnapshot:
    message_id: UUID
    content: str
    seq: int
    status: str


def message_stream_snapshot(*, conversation: Conversation, message_id: UUID | str) -> StreamSnapshot | None:
    """What the database has of a reply in ``conversation``, in one query."""
    row = (
        Message.objects.filter(conversation=conversation, public_id=message_id)
        .values("public_id", "content", "stream_seq", "status")
        .first()
    )
    if row is None:
        return None
    return StreamSnapshot(row["public_id"], row["content"], row["stream_seq"], row["status"])


def conversation_recently_finished(*, conversation: Conversation, minutes: int = 10, limit: int = 3) -> list[str]:
    """Public ids of replies that ended in the last few minutes, newest first."""
    since = timezone.now() - timedelta(minutes=minutes)
    rows = conversation.messages.filter(role=Message.Role.ASSISTANT, finished_at__gte=since).order_by("-finished_at")
    return [str(public_id) for public_id in rows.values_list("public_id", flat=True)[:limit]]


# -- The active branch, a page at a time ------------------------------------------------


def _path_ids(*, conversation: Conversation) -> list[int]:
    """Ids on the active branch, oldest first, from one narrow query (no message text)."""
    parents = dict(Message.objects.filter(conversation=conversation).values_list("id", "parent_id"))
    path: list[int] = []
    node_id = conversation.active_leaf_id
    while node_id is not None and node_id in parents:
        path.append(node_id)
        node_id = parents[node_id]
    path.reverse()
    return path


def branch_newest_leaf(*, message: Message) -> Message:
    """Follow the newest child down from ``message`` to a leaf."""
    rows = Message.objects.filter(conversation_id=message.conversation_id).values_list("id", "parent_id")
    newest_child: dict[int, int] = {}
    for node_id, parent_id in sorted(rows):  # ids grow with time, so the last one wins
        if parent_id is not None:
            newest_child[parent_id] = node_id
    node_id = message.pk
    while node_id in newest_child:
        node_id = newest_child[node_id]
    return Message.objects.get(pk=node_id)


@dataclass(frozen=True)
class MessageView:
    """A message as shown: where it sits among its siblings, and the viewer's feedback."""

    message: Message
    position: int = 1
    count: int = 1
    previous_id: UUID | None = None
    next_id: UUID | None = None
    feedback: MessageFeedback | None = None


def message_views(*, messages: list[Message], user: AbstractBaseUser | AnonymousUser | None) -> list[MessageView]:
    """Sibling positions ("2 / 3") and the user's feedback for ``messages`` (two queries)."""
    if not messages:
        return []
    conversation_id = messages[0].conversation_id
    parent_ids = {m.parent_id for m in messages}
    family = Q(parent_id__in=[p for p in parent_ids if p is not None])
    if None in parent_ids:
        family |= Q(parent__isnull=True)
    siblings: dict[int | None, list[tuple[int, UUID]]] = {}
    rows = Message.objects.filter(family, conversation_id=conversation_id).values_list("parent_id", "id", "public_id")
    for parent_id, node_id, public_id in sorted(rows, key=lambda row: row[1]):
        siblings.setdefault(parent_id, []).append((node_id, public_id))
    feedback = {}
    if user is not None and user.is_authenticated:
        feedback = {f.message_id: f for f in MessageFeedback.objects.filter(message__in=messages, user_id=user.pk)}
    return [_message_view(m, siblings.get(m.parent_id, []), feedback.get(m.pk)) for m in messages]


def _message_view(message: Message, family: list[tuple[int, UUID]], feedback: MessageFeedback | None) -> MessageView:
    ids = [node_id for node_id, _ in family]
    if message.pk not in ids:
        return MessageView(message=message, feedback=feedback)
    index = ids.index(message.pk)
    previous_id = family[index - 1][1] if index > 0 else None
    next_id = family[index + 1][1] if index + 1 < len(family) else None
    return MessageView(message, index + 1, len(family), previous_id, next_id, feedback)


@dataclass(frozen=True)
class MessagePage:
    views: list[MessageView]
    older_before: UUID | None  # the public id to ask for older messages before, if any


def conversation_message_page(
    *,
    conversation: Conversation,
    user: AbstractBaseUser | AnonymousUser | None,
    before: UUID | str | None = None,
    include: UUID | str | None = None,
    limit: int | None = None,
) -> MessagePage:
    """The newest ``limit`` messages of the active branch (older than ``before`` if given).

    ``include`` widens the page so that message is in it (a switched branch point).
    """
    limit = limit or settings.CHAT_INITIAL_MESSAGES
    path = _path_ids(conversation=conversation)
    end = len(path)
    if before is not None:
        end = _index_of(path, before, default=0)
    start = max(0, end - limit)
    if include is not None:
        start = min(start, _index_of(path, include, default=start))
    by_id = Message.objects.prefetch_related("attachments").in_bulk(path[start:end])
    shown = [by_id[node_id] for node_id in path[start:end]]
    older = shown[0].public_id if start > 0 and shown else None
    return MessagePage(views=message_views(messages=shown, user=user), older_before=older)


def _index_of(path: list[int], public_id: UUID | str, *, default: int) -> int:
    try:
        node = Message.objects.filter(public_id=str(public_id), id__in=path).values_list("id", flat=True).first()
    except ValidationError:
        node = None
    return path.index(node) if node is not None else default


def message_get_for_owner(*, owner: AbstractBaseUser | AnonymousUser, public_id: UUID | str) -> Message:
    """A message of one of the owner's conversations, or Http404."""
    return get_object_or_404(
        Message.objects.select_related("conversation"), public_id=public_id, conversation__owner_id=owner.pk
    )


# -- Search -------------------------------------------------------------------------------

SEARCH_MIN_CHARS = 2
SEARCH_MAX_CHARS = 200
SEARCH_SNIPPET_CHARS = 70


@dataclass(frozen=True)
class SearchHit:
    conversation: Conversation
    title_html: str
    snippets: list[str]


def search_terms(query: str) -> list[str]:
    """The words of a query (at most 8); every one must appear for a match."""
    words = query[:SEARCH_MAX_CHARS].split()
    return [w for w in words if w][:8] if len(query.strip()) >= SEARCH_MIN_CHARS else []


def conversation_search(*, owner: AbstractBaseUser | AnonymousUser, query: str, limit: int = 20) -> list[SearchHit]:
    """The owner's conversations whose title, or one message, contains every word of ``query``.

    Case-insensitive substring matching (``icontains``): on PostgreSQL a trigram GIN
    index on ``UPPER(content)`` and ``UPPER(title)`` serves it (migration 0005); on
    SQLite it scans the owner's messages (``python -m bench.search`` times both against
    matching in Python; figures in docs/performance.md).
    """
    terms = search_terms(query)
    if not terms or owner.pk is None:
        return []
    in_title = Q()
    in_text = Q()
    for term in terms:
        in_title &= Q(title__icontains=term)
        in_text &= Q(content__icontains=term)
    matching = Message.objects.filter(in_text, conversation=OuterRef("pk"))
    found = list(
        Conversation.objects.filter(owner_id=owner.pk)
        .filter(in_title | Exists(matching))
        .order_by("-updated_at", "-id")[:limit]
    )
    snippets = _snippets(found, in_text, terms)
    return [SearchHit(c, highlight(c.title or "New chat", terms), snippets.get(c.pk, [])) for c in found]


def _snippets(found: list[Conversation], in_text: Q, terms: list[str]) -> dict[int, list[str]]:
    rows = (
        Message.objects.filter(in_text, conversation__in=found)
        .order_by("-created_at")
        .values_list("conversation_id", "content")[: len(found) * 4]
    )
    snippets: dict[int, list[str]] = {}
    for conversation_id, content in rows:
        kept = snippets.setdefault(conversation_id, [])
        if len(kept) < 2:
            kept.append(highlight(_excerpt(content, terms[0]), terms))
    return snippets


def _excerpt(text: str, term: str) -> str:
    flat = " ".join(text.split())
    at = flat.lower().find(term.lower())
    start = max(0, at - SEARCH_SNIPPET_CHARS // 2)
    end = min(len(flat), start + SEARCH_SNIPPET_CHARS * 2)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


def highlight(text: str, terms: list[str]) -> str:
    """``text`` HTML-escaped, with each occurrence of a term wrapped in ``<mark>``."""
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
    pieces: list[str] = []
    last = 0
    for match in pattern.finditer(text):
        pieces.append(html.escape(text[last : match.start()]))
        pieces.append(f"<mark>{html.escape(match.group(0))}</mark>")
        last = match.end()
    pieces.append(html.escape(text[last:]))
    return "".join(pieces)


# -- Export ---------------------------------------------------------------------------------


def _attachments_of(messages: list[Message]) -> dict[int, list[Attachment]]:
    found: dict[int, list[Attachment]] = {}
    users = [message.pk for message in messages if message.role == Message.Role.USER]
    for item in Attachment.objects.filter(message_id__in=users).order_by("created_at", "id") if users else []:
        found.setdefault(item.message_id, []).append(item)  # type: ignore[arg-type]
    return found


def prompt_turns(*, history: list[Message]) -> list[dict[str, str]]:
    """``history`` as the model is given it: each user message followed by its files. The
    newest message's files may be cut to fit the context window (prompt.CUT_FROM)."""
    files = _attachments_of(history)
    turns: list[dict[str, str]] = []
    for message in history:
        if message.content or message.role == Message.Role.USER:
            turns.append({"role": message.role, "content": with_attachments(message.content, files.get(message.pk, []))})
    if history and history[-1].role == Message.Role.USER and files.get(history[-1].pk):
        turns[-1][CUT_FROM] = str(len(history[-1].content))
    return turns


def conversation_chat_messages(*, conversation: Conversation) -> list[dict[str, str]]:
    """The active branch in the chat format used for training: system prompt first.

    Replies that failed or are still being written are left out, with the question
    they answered, so every user turn is followed by a real answer.
    """
    chat: list[dict[str, str]] = []
    if conversation.system_prompt.strip():
        chat.append({"role": "system", "content": conversation.system_prompt})
    pending: dict[str, str] | None = None
    messages = conversation_active_messages(conversation=conversation)
    files = _attachments_of(messages)
    for message in messages:
        if message.role == Message.Role.USER:
            pending = {"role": "user", "content": with_attachments(message.content, files.get(message.pk, []))}
        elif pending is not None and message.status == Message.Status.COMPLETE and message.content.strip():
            chat += [pending, {"role": "assistant", "content": message.content}]
            pending = None
    return chat


def conversation_export_json(*, conversation: Conversation) -> str:
    return json.dumps({"messages": conversation_chat_messages(conversation=conversation)}, ensure_ascii=False, indent=2)


def conversation_export_markdown(*, conversation: Conversation) -> str:
    lines = [f"# {conversation.title or 'New chat'}", "", f"Model: {conversation.model_name}", ""]
    names = {"system": "System", "user": "You", "assistant": "Assistant"}
    for message in conversation_chat_messages(conversation=conversation):
        lines += [f"## {names[message['role']]}", "", message["content"].rstrip(), ""]
    return "\n".join(lines)


# -- Staff review (admin) -------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptEntry:
    """One message of a transcript as staff see it: every branch, the active one marked."""

    message: Message
    active: bool
    position: int
    count: int
    feedback: list[MessageFeedback]


def transcript_entries(*, conversation: Conversation) -> list[TranscriptEntry]:
    """Every message of the tree, depth first (a branch follows its predecessor's subtree)."""
    messages = list(
        Message.objects.filter(conversation=conversation)
        .select_related("generation")
        .prefetch_related("attachments")
        .order_by("id")
    )
    children: dict[int | None, list[Message]] = {}
    for message in messages:
        children.setdefault(message.parent_id, []).append(message)
    feedback: dict[int, list[MessageFeedback]] = {}
    for item in MessageFeedback.objects.filter(message__conversation=conversation).select_related("user"):
        feedback.setdefault(item.message_id, []).append(item)
    active = set(_path_ids(conversation=conversation))
    entries: list[TranscriptEntry] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        message = stack.pop()
        family = children.get(message.parent_id, [])
        entry = TranscriptEntry(
            message, message.pk in active, family.index(message) + 1, len(family), feedback.get(message.pk, [])
        )
        entries.append(entry)
        stack += reversed(children.get(message.pk, []))
    return entries


@dataclass(frozen=True)
class PromptInspection:
    reply: Message
    left_out: list[Message]  # turns dropped to fit the context window, oldest first
    tokens_per_second: float | None


def reply_inspection(*, reply: Message) -> PromptInspection:
    history = message_path(leaf=reply.parent)
    record = getattr(reply, "generation", None)
    dropped = record.dropped_messages if record is not None else reply.dropped_turns
    speed = None
    if record is not None and record.decode_seconds and reply.completion_tokens:
        speed = reply.completion_tokens / record.decode_seconds
    return PromptInspection(reply=reply, left_out=history[:dropped], tokens_per_second=speed)


def transcript_as_record(*, conversation: Conversation) -> dict[str, object]:
    """A whole transcript (every branch, feedback included) as one JSON-ready object."""
    entries = transcript_entries(conversation=conversation)
    public_ids = {entry.message.pk: str(entry.message.public_id) for entry in entries}
    return {
        "id": str(conversation.public_id),
        "title": conversation.title,
        "user": conversation.owner.get_username(),
        "model": conversation.model_name,
        "source": conversation.source,
        "created_at": conversation.created_at.isoformat(),
        "system_prompt": conversation.system_prompt,
        "active_messages": conversation_chat_messages(conversation=conversation),
        "messages": [_entry_record(entry, public_ids) for entry in entries],
    }


def _entry_record(entry: TranscriptEntry, public_ids: dict[int, str]) -> dict[str, object]:
    message = entry.message
    return {
        "id": str(message.public_id),
        "parent": public_ids.get(message.parent_id) if message.parent_id else None,
        "role": message.role,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "active": entry.active,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "model": message.model_name,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "feedback": [
            {"user": f.user.get_username(), "rating": f.rating, "reason": f.reason, "comment": f.comment}
            for f in entry.feedback
        ],
    }


def user_theme(*, user: AbstractBaseUser | AnonymousUser) -> str:
    """The theme ``user`` chose (system, light or dark); the system's for anyone else."""
    if not user.is_authenticated:
        return UserPreferences.Theme.SYSTEM.value
    theme = UserPreferences.objects.filter(user_id=user.pk).values_list("theme", flat=True).first()
    return theme or UserPreferences.Theme.SYSTEM.value
