"""Writes to conversations and messages. Each checks the current state before changing it."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, Message
from inference import registry


def conversation_create(*, owner: User, model_name: str | None = None) -> Conversation:
    return Conversation.objects.create(
        owner=owner,
        model_name=model_name or registry.default_model_id(),
        system_prompt=settings.INFERENCE_DEFAULT_SYSTEM_PROMPT,
        temperature=settings.INFERENCE_DEFAULT_TEMPERATURE,
        max_tokens=settings.INFERENCE_DEFAULT_MAX_TOKENS,
    )


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
    *, conversation: Conversation, model_name: str, system_prompt: str, temperature: float, max_tokens: int
) -> Conversation:
    if registry.model_get(model_name) is None:
        raise ValidationError(f"The model {model_name!r} is not available.")
    conversation.model_name = model_name
    conversation.system_prompt = system_prompt
    conversation.temperature = temperature
    conversation.max_tokens = max_tokens
    conversation.save(update_fields=["model_name", "system_prompt", "temperature", "max_tokens", "updated_at"])
    return conversation


def message_text_clean(*, text: object) -> str:
    """Validate what a user typed; raise ValidationError with a sentence for them."""
    if not isinstance(text, str):
        raise ValidationError("A message must be text.")
    text = text.strip()
    if not text:
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


def turn_start(*, conversation: Conversation, text: object) -> Turn:
    """Save the user's message and an empty streaming reply in one transaction."""
    clean = message_text_clean(text=text)
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.messages.filter(status=Message.Status.STREAMING).exists():
            raise ValidationError("Wait for the current reply to finish, or press Stop.")
        user_message = Message.objects.create(
            conversation=locked, parent_id=locked.active_leaf_id, role=Message.Role.USER, content=clean
        )
        reply = Message.objects.create(
            conversation=locked,
            parent=user_message,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model_name=locked.model_name,
        )
        locked.active_leaf = reply
        if not locked.title:
            locked.title = title_from_text(clean)
        locked.save(update_fields=["active_leaf", "title", "updated_at"])
    conversation.refresh_from_db()
    return Turn(user_message=user_message, assistant_message=reply)


def assistant_message_flush(*, message_pk: int, content: str, seq: int) -> bool:
    """Write the streamed text so far; returns whether a Stop was requested."""
    Message.objects.filter(pk=message_pk, status=Message.Status.STREAMING).update(content=content, stream_seq=seq)
    return Message.objects.filter(pk=message_pk, cancel_requested=True).exists()


def assistant_message_set_dropped_turns(*, message_pk: int, dropped_turns: int) -> None:
    Message.objects.filter(pk=message_pk).update(dropped_turns=dropped_turns)


def assistant_message_finish(
    *,
    message_pk: int,
    content: str,
    seq: int,
    finish_reason: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    error: str = "",
) -> bool:
    """Record the end of a reply; returns False if it had already ended."""
    status = Message.Status.ERROR if finish_reason == Message.FinishReason.ERROR else Message.Status.COMPLETE
    updated = Message.objects.filter(pk=message_pk, status=Message.Status.STREAMING).update(
        content=content,
        stream_seq=seq,
        status=status,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
        finished_at=timezone.now(),
    )
    return updated == 1


def assistant_message_request_cancel(*, message: Message) -> bool:
    """Ask the generation job to stop; it keeps the partial reply."""
    updated = Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(cancel_requested=True)
    return updated == 1
