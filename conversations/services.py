"""Writes to conversations and messages. Each checks the current state before changing it."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from conversations.attachments import attachment_ids_clean, attachments_bind, attachments_copy
from conversations.models import (
    AUDIT_QUERY_CHARS,
    Conversation,
    GenerationRecord,
    Message,
    MessageFeedback,
    TranscriptTag,
    TranscriptView,
    UserPreferences,
)
from conversations.streams import WORKER_STOPPED
from inference import fair_use, registry


def conversation_draft(*, owner: User, chosen: dict[str, Any] | None = None) -> Conversation:
    """A new chat not yet stored (the page "New chat" opens): the default model's settings,
    or those ``chosen`` on that page before its first message."""
    model_name = (chosen or {}).get("model_name") or registry.default_model_id()
    sampling = registry.sampling_defaults(model_id=model_name)
    draft = Conversation(
        owner=owner,
        model_name=model_name,
        system_prompt=settings.INFERENCE_DEFAULT_SYSTEM_PROMPT,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=settings.INFERENCE_DEFAULT_MAX_TOKENS,
        frequency_penalty=settings.INFERENCE_DEFAULT_FREQUENCY_PENALTY,
    )
    for name in DRAFT_FIELDS:
        if (chosen or {}).get(name) is not None:
            setattr(draft, name, chosen[name])  # type: ignore[index]
    return draft


DRAFT_FIELDS = ("model_name", "system_prompt", "temperature", "top_p", "max_tokens", "frequency_penalty")


def conversation_create(*, owner: User, model_name: str | None = None) -> Conversation:
    """A new chat on ``model_name`` (the default model if None), sampling as that model advises."""
    conversation = conversation_draft(owner=owner, chosen={"model_name": model_name})
    conversation.save()
    return conversation


def conversation_start(
    *, owner: User, text: object, chosen: dict[str, Any] | None = None, attachments: object = None
) -> Turn:
    """Store a new chat with its first message and reply, all or nothing: a message that is
    refused (empty, too long, over a limit) leaves no empty conversation behind."""
    message_text_clean(text=text, files=bool(attachment_ids_clean(attachments)))
    if chosen and registry.model_get(str(chosen.get("model_name")), user=owner) is None:
        chosen = {}  # a model restricted since it was picked: the default instead
    with transaction.atomic():
        conversation = conversation_draft(owner=owner, chosen=chosen)
        conversation.save()
        return turn_start(conversation=conversation, text=text, attachments=attachments)


def conversation_pin(*, conversation: Conversation, pinned: bool) -> Conversation:
    """Keep the conversation at the top of its owner's sidebar, or let it go back in line."""
    if pinned != (conversation.pinned_at is not None):
        conversation.pinned_at = timezone.now() if pinned else None
        # Not touching updated_at: pinning is not activity.
        Conversation.objects.filter(pk=conversation.pk).update(pinned_at=conversation.pinned_at)
    return conversation


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = " ".join(title.split())
    if not title:
        raise ValidationError("A title cannot be empty.")
    conversation.title = title[:200]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_update_settings(
    *,
    conversation: Conversation,
    model_name: str,
    system_prompt: str,
    temperature: float,
    max_tokens: int,
    frequency_penalty: float | None = None,
    top_p: float | None = None,
) -> Conversation:
    """Save a conversation's settings; a ``frequency_penalty`` or ``top_p`` of None keeps the current one."""
    if registry.model_get(model_name, user=conversation.owner) is None:
        raise ValidationError(f"The model {model_name!r} is not available.")
    conversation.model_name = model_name
    conversation.system_prompt = system_prompt
    conversation.temperature = temperature
    conversation.max_tokens = max_tokens
    if frequency_penalty is not None:
        conversation.frequency_penalty = frequency_penalty
    if top_p is not None:
        conversation.top_p = top_p
    conversation.save(
        update_fields=[
            "model_name",
            "system_prompt",
            "temperature",
            "top_p",
            "max_tokens",
            "frequency_penalty",
            "updated_at",
        ]
    )
    return conversation


def message_text_clean(*, text: object, files: bool = False) -> str:
    """Validate what a user typed; raise ValidationError with a sentence for them. With
    ``files`` attached, the text may be empty."""
    if not isinstance(text, str):
        raise ValidationError("A message must be text.")
    text = text.strip()
    if not text and not files:
        raise ValidationError("Type a message before sending.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ValidationError(f"Your message is {len(text):,} characters long; the limit is {limit:,}.")
    return text


def title_from_text(text: str) -> str:
    words = " ".join(text.split())
    limit = settings.CHAT_TITLE_CHARS
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Turn:
    user_message: Message
    assistant_message: Message


def turn_start(*, conversation: Conversation, text: object, attachments: object = None) -> Turn:
    """Save the user's message (with the files ``attachments`` names) and an empty streaming
    reply in one transaction."""
    files = attachment_ids_clean(attachments)
    clean = message_text_clean(text=text, files=bool(files))
    _model_check_usable(conversation)
    with transaction.atomic():
        locked = _conversation_lock_idle(conversation)
        user_message = Message.objects.create(
            conversation=locked, parent_id=locked.active_leaf_id, role=Message.Role.USER, content=clean
        )
        attachments_bind(owner_id=locked.owner_id, ids=files, message=user_message)
        reply = Message.objects.create(
            conversation=locked,
            parent=user_message,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model_name=locked.model_name,
        )
        locked.active_leaf = reply
        if not locked.title:
            locked.title = title_from_text(clean or " ".join(user_message.attachments.values_list("name", flat=True)))
        locked.save(update_fields=["active_leaf", "title", "updated_at"])
    _conversation_follow(conversation, locked)
    return Turn(user_message=user_message, assistant_message=reply)


def _model_check_usable(conversation: Conversation) -> None:
    """Refuse a reply on a model its owner may no longer use: restricted to others, hidden
    or deleted since the conversation picked it."""
    if registry.is_fine_tuned(conversation.model_name):  # base models are everyone's; no query
        if registry.model_get(conversation.model_name, user=conversation.owner) is None:
            raise ValidationError(registry.model_gone(conversation.model_name))


def _conversation_follow(conversation: Conversation, locked: Conversation) -> None:
    """Give the caller's copy what the locked copy changed (saves reading the row again)."""
    conversation.active_leaf = locked.active_leaf
    conversation.title = locked.title
    conversation.updated_at = locked.updated_at


def assistant_messages_flush(
    *, texts: dict[int, tuple[str, int]], live: Collection[int], beat: Collection[int] = ()
) -> set[int]:
    """Write several replies' streamed text and heartbeats in one transaction.

    ``texts`` maps a reply to its text so far and sequence number; ``beat`` says which
    replies are alive. Returns the replies of ``live`` whose jobs should stop: Stop was
    pressed, or the reply has already ended (a watchdog failed it) or is gone. Their
    finish then records the text the job has.
    """
    streaming = Message.objects.filter(status=Message.Status.STREAMING, cancel_requested=False)
    with transaction.atomic():
        going = set(streaming.filter(pk__in=live).values_list("pk", flat=True))
        _stream_texts_write([(text, seq, pk) for pk, (text, seq) in texts.items() if pk in going])
        if beat:
            Message.objects.filter(pk__in=beat, status=Message.Status.STREAMING).update(heartbeat_at=timezone.now())
    return set(live) - going


def _stream_texts_write(rows: list[tuple[str, int, int]]) -> None:
    """Set (content, stream_seq) of streaming replies by id, as one prepared statement.

    The ORM's bulk_update builds a CASE expression per row: ~0.4 ms of Python a reply,
    every tick, for every streaming reply.
    """
    if not rows:
        return
    table, content, seq, pk, status, cancel = map(
        connection.ops.quote_name,
        (Message._meta.db_table, "content", "stream_seq", "id", "status", "cancel_requested"),
    )
    where = f"{pk} = %s AND {status} = %s AND {cancel} = %s"
    sql = f"UPDATE {table} SET {content} = %s, {seq} = %s WHERE {where}"  # noqa: S608 - identifiers only
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(*row, Message.Status.STREAMING.value, False) for row in rows])


def assistant_message_set_dropped_turns(*, message_pk: int, dropped_turns: int, attachment_cut_chars: int = 0) -> None:
    """What context fitting left out of the reply's prompt: earlier turns, and characters of
    the question's attached files."""
    Message.objects.filter(pk=message_pk).update(dropped_turns=dropped_turns, attachment_cut_chars=attachment_cut_chars)


def assistant_message_finish(
    *,
    message_pk: int,
    content: str,
    seq: int,
    finish_reason: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    error: str = "",
    reclaim_reaped: bool = False,
    first_token_seconds: float | None = None,
    decode_seconds: float | None = None,
    weights: str = "",
) -> bool:
    """Record the end of a reply and how fast it came; returns False if it had already ended.

    With ``reclaim_reaped`` it also ends a reply that a reaper failed as abandoned
    (``WORKER_STOPPED``): the caller is that reply's job, alive after all.
    """
    status = Message.Status.ERROR if finish_reason == Message.FinishReason.ERROR else Message.Status.COMPLETE
    ending = Q(status=Message.Status.STREAMING)
    if reclaim_reaped:
        ending |= Q(status=Message.Status.ERROR, error=WORKER_STOPPED)
    updated = Message.objects.filter(ending, pk=message_pk).update(
        content=content,
        stream_seq=seq,
        status=status,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
        finished_at=timezone.now(),
        first_token_seconds=first_token_seconds,
        decode_seconds=decode_seconds,
        weights=weights[:20],
    )
    return updated == 1


def assistant_message_request_cancel(*, message: Message) -> bool:
    """Ask the generation job to stop; it keeps the partial reply."""
    updated = Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(cancel_requested=True)
    return updated == 1


# -- Branches: regenerate, edit, switch --------------------------------------------------


def owner_limits_lock(*, owner_id: int) -> None:
    """Hold the owner's row until the transaction ends, so that checking a per-user limit
    and creating what it counts happen as one step across every web process.

    Locking only the conversation let two processes each count the same user's replies
    before either had created its own, and both go ahead. Callers lock the owner first,
    then the conversation, always in that order.
    """
    User.objects.select_for_update().filter(pk=owner_id).values_list("pk", flat=True).first()


def _conversation_lock_idle(conversation: Conversation) -> Conversation:
    """Lock the owner's and the conversation's rows; refuse while one of its replies is
    still streaming, or while its owner is over a limit."""
    owner_limits_lock(owner_id=conversation.owner_id)
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    counts = _owner_stream_counts(owner_id=locked.owner_id, conversation_pk=locked.pk)
    if counts["here"]:
        raise ValidationError("Wait for the current reply to finish, or press Stop.")
    if counts["streaming"] >= settings.CHAT_MAX_CONCURRENT_STREAMS:
        raise ValidationError(_streams_refusal(owner_id=locked.owner_id, count=counts["streaming"]))
    if counts["recent"] >= settings.CHAT_MESSAGES_PER_MINUTE:
        raise ValidationError(
            f"You can send {settings.CHAT_MESSAGES_PER_MINUTE} messages a minute; wait a moment and try again."
        )
    _shared_streams_check(owner_id=locked.owner_id, chat_streams=counts["streaming"])
    return locked


def _streams_refusal(*, owner_id: int, count: int) -> str:
    """Say which conversations hold the user's streams, so a stuck one can be found and stopped."""
    titles = [
        str(conversation)
        for conversation in Conversation.objects.filter(
            owner_id=owner_id, messages__status=Message.Status.STREAMING, messages__role=Message.Role.ASSISTANT
        )
        .distinct()
        .order_by("-updated_at")
    ]
    where = ", ".join(f"“{title}”" for title in titles)
    return f"You already have {count} replies being written (in {where}); wait for one to finish or stop it."


def _shared_streams_check(*, owner_id: int, chat_streams: int) -> None:
    """Chat replies and API completions share INFERENCE_MAX_STREAMS_PER_USER (inference/fair_use.py)."""
    api = fair_use.api_slots_held(user_id=owner_id)
    if chat_streams + api >= settings.INFERENCE_MAX_STREAMS_PER_USER:
        raise ValidationError(str(fair_use.StreamsLimitReached(chat=chat_streams, api=api, wanted=1)))


def _owner_stream_counts(*, owner_id: int, conversation_pk: int) -> dict[str, int]:
    """Per-user limits, counted in the database so every process agrees (one query)."""
    streaming = Q(status=Message.Status.STREAMING)
    return Message.objects.filter(conversation__owner_id=owner_id, role=Message.Role.ASSISTANT).aggregate(
        here=Count("pk", filter=streaming & Q(conversation_id=conversation_pk)),
        streaming=Count("pk", filter=streaming),
        recent=Count("pk", filter=Q(created_at__gte=timezone.now() - timedelta(minutes=1))),
    )


def _message_in(conversation: Conversation, message_id: object, role: str) -> Message:
    message = None
    try:
        message = conversation.messages.filter(public_id=str(message_id), role=role).first()
    except ValidationError:
        pass  # not a UUID
    if message is None:
        raise ValidationError(
            f"That {'reply' if role == Message.Role.ASSISTANT else 'message'} is not in this conversation."
        )
    return message


def _reply_create(conversation: Conversation, parent: Message) -> Message:
    reply = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model_name=conversation.model_name,
    )
    conversation.active_leaf = reply
    conversation.save(update_fields=["active_leaf", "updated_at"])
    return reply


def reply_regenerate(*, conversation: Conversation, message_id: object) -> Turn:
    """A new reply to the same user message, as a sibling of ``message_id``; the old one stays."""
    _model_check_usable(conversation)
    with transaction.atomic():
        locked = _conversation_lock_idle(conversation)
        original = _message_in(locked, message_id, Message.Role.ASSISTANT)
        if original.parent is None:
            raise ValidationError("That reply has no question to answer again.")
        reply = _reply_create(locked, original.parent)
    _conversation_follow(conversation, locked)
    return Turn(user_message=original.parent, assistant_message=reply)


def message_edit(*, conversation: Conversation, message_id: object, text: object) -> Turn:
    """Send an edited copy of a user message as a new branch, with a fresh reply."""
    clean = message_text_clean(text=text)
    _model_check_usable(conversation)
    with transaction.atomic():
        locked = _conversation_lock_idle(conversation)
        original = _message_in(locked, message_id, Message.Role.USER)
        user_message = Message.objects.create(
            conversation=locked, parent_id=original.parent_id, role=Message.Role.USER, content=clean
        )
        attachments_copy(source=original, target=user_message)
        reply = _reply_create(locked, user_message)
    _conversation_follow(conversation, locked)
    return Turn(user_message=user_message, assistant_message=reply)


def reply_continue(*, conversation: Conversation, message_id: object) -> Turn:
    """Write more of a reply that stopped at its token limit: the same message streams again
    from where it stopped (the model sees its own text so far and goes on)."""
    _model_check_usable(conversation)
    with transaction.atomic():
        locked = _conversation_lock_idle(conversation)
        reply = _message_in(locked, message_id, Message.Role.ASSISTANT)
        if reply.finish_reason != Message.FinishReason.LENGTH or reply.status != Message.Status.COMPLETE:
            raise ValidationError("Only a reply that stopped at its token limit can be continued.")
        if locked.active_leaf_id != reply.pk:
            raise ValidationError("Only the last reply of the conversation can be continued.")
        # A fresh heartbeat: the reaper would take an old one for a dead worker.
        reply.status, reply.finish_reason, reply.cancel_requested = Message.Status.STREAMING, "", False
        reply.finished_at, reply.heartbeat_at, reply.model_name = None, timezone.now(), locked.model_name
        fields = ["status", "finish_reason", "cancel_requested", "finished_at", "heartbeat_at", "model_name"]
        reply.save(update_fields=fields)
        locked.save(update_fields=["updated_at"])
    _conversation_follow(conversation, locked)
    assert reply.parent is not None
    return Turn(user_message=reply.parent, assistant_message=reply)


def branch_switch(*, conversation: Conversation, message_id: object) -> Message:
    """Show the branch through ``message_id``: the active leaf becomes its newest descendant."""
    from conversations.selectors import branch_newest_leaf

    message = None
    try:
        message = conversation.messages.filter(public_id=str(message_id)).first()
    except ValidationError:
        pass
    if message is None:
        raise ValidationError("That message is not in this conversation.")
    conversation.active_leaf = branch_newest_leaf(message=message)
    conversation.save(update_fields=["active_leaf"])
    return conversation.active_leaf


def conversation_delete_all(*, owner: User) -> int:
    """Delete every conversation of ``owner``; returns how many there were."""
    with transaction.atomic():
        count = Conversation.objects.filter(owner=owner).count()
        Conversation.objects.filter(owner=owner).delete()
    return count


# -- Feedback ------------------------------------------------------------------------------

FEEDBACK_COMMENT_CHARS = 2000


def message_feedback_set(
    *, message: Message, user: User, rating: str, reason: str = "", comment: str = ""
) -> MessageFeedback | None:
    """Record thumbs up or down on a reply (a reason only goes with down); "clear" removes it."""
    if message.role != Message.Role.ASSISTANT or message.status == Message.Status.STREAMING:
        raise ValidationError("Feedback is for finished replies.")
    if rating == "clear":
        MessageFeedback.objects.filter(message=message, user=user).delete()
        return None
    if rating not in MessageFeedback.Rating.values:
        raise ValidationError("Choose thumbs up or thumbs down.")
    if reason and reason not in MessageFeedback.Reason.values:
        raise ValidationError("Choose one of the listed reasons.")
    comment = comment.strip()
    if len(comment) > FEEDBACK_COMMENT_CHARS:
        raise ValidationError(f"Keep the comment under {FEEDBACK_COMMENT_CHARS:,} characters.")
    if rating == MessageFeedback.Rating.UP:
        reason, comment = "", ""
    feedback, _ = MessageFeedback.objects.update_or_create(
        message=message, user=user, defaults={"rating": rating, "reason": reason, "comment": comment}
    )
    return feedback


# -- Generation records (the staff "inspect" view) -----------------------------------------


def generation_record_start(
    *, message_pk: int, model_name: str, tokenizer: Any, fitted: Any, params: Any
) -> GenerationRecord:
    """Keep the exact prompt a reply was generated from, and the settings it ran with.

    ``fitted`` is the engine's FittedPrompt and ``params`` the SamplingParams as
    submitted; ``max_new_tokens`` is recorded after capping to the context window.
    """
    from inference.engine.prompt import render_text

    settings_used = {**asdict(params), "stop": list(params.stop), "max_new_tokens": fitted.max_new_tokens}
    record, _ = GenerationRecord.objects.update_or_create(
        message_id=message_pk,
        defaults={
            "model_name": model_name,
            "prompt_text": render_text(tokenizer, fitted.messages),
            "prompt_tokens": len(fitted.prompt_ids),
            "prompt_messages": list(fitted.messages),
            "dropped_messages": fitted.dropped_messages,
            "params": settings_used,
        },
    )
    return record


def generation_record_finish(
    *,
    message_pk: int,
    queue_seconds: float | None,
    first_token_seconds: float | None,
    decode_seconds: float | None,
) -> None:
    GenerationRecord.objects.filter(message_id=message_pk).update(
        queue_seconds=queue_seconds, first_token_seconds=first_token_seconds, decode_seconds=decode_seconds
    )


# -- Staff review ----------------------------------------------------------------------------

TAG_CHARS = 60


def transcript_view_record(*, conversation: Conversation, viewer: User, what: str = "transcript") -> None:
    """Audit: a staff member opened this user's transcript (or one reply's prompt)."""
    TranscriptView.objects.create(
        conversation_public_id=conversation.public_id,
        owner_username=conversation.owner.get_username(),
        viewer=viewer,
        viewer_username=viewer.get_username(),
        what=what,
    )


def transcript_search_record(*, viewer: User, query: str, conversations: Iterable[Conversation]) -> None:
    """Audit: a staff member searched users' text; one record for each conversation the
    results showed (owners loaded), or one without a conversation if nothing matched."""
    audit = {"viewer": viewer, "viewer_username": viewer.get_username(), "what": TranscriptView.What.SEARCH}
    query = query[:AUDIT_QUERY_CHARS]
    found = {conversation.pk: conversation for conversation in conversations}.values()
    rows = [
        TranscriptView(
            conversation_public_id=conversation.public_id,
            owner_username=conversation.owner.get_username(),
            query=query,
            **audit,
        )
        for conversation in found
    ]
    TranscriptView.objects.bulk_create(rows or [TranscriptView(query=query, **audit)])


def transcript_tag_add(*, conversation: Conversation, name: str, added_by: User) -> TranscriptTag:
    clean = " ".join(name.split()).lower()
    if not clean:
        raise ValidationError("A tag needs a name.")
    if len(clean) > TAG_CHARS:
        raise ValidationError(f"Keep tags under {TAG_CHARS} characters.")
    tag, _ = TranscriptTag.objects.get_or_create(conversation=conversation, name=clean, defaults={"added_by": added_by})
    return tag


def transcript_tag_remove(*, conversation: Conversation, name: str) -> None:
    TranscriptTag.objects.filter(conversation=conversation, name=name).delete()


# -- Preferences ---------------------------------------------------------------------------


def user_theme_set(*, user: User, theme: str) -> UserPreferences:
    """Remember ``theme`` (system, light or dark) for ``user``."""
    if theme not in UserPreferences.Theme.values:
        raise ValidationError(f"Unknown theme {theme!r}: choose system, light or dark.")
    preferences, _ = UserPreferences.objects.update_or_create(user=user, defaults={"theme": theme})
    return preferences


def user_email_set(*, user: User, email: str) -> User:
    """The address password reset links go to ("" for none)."""
    user.email = User.objects.normalize_email(email.strip())
    user.save(update_fields=["email"])
    return user
