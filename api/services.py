"""Writes the API makes: keeping a completion as a transcript (``"store": true``)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from api.completions import Completion
from api.schemas import ChatRequest
from conversations.models import Conversation, Message
from conversations.services import title_from_text


def api_transcript_store(*, owner: User, request: ChatRequest, completion: Completion) -> Conversation:
    """A conversation (source "api") holding the request's messages and every choice.

    System instructions become the conversation's system prompt; with n > 1 the
    choices are sibling replies (branches) of the last message, the first one shown.
    """
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    turns = [m for m in request.messages if m["role"] != "system"]
    first_user = next((m["content"] for m in turns if m["role"] == "user"), "")
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            title=title_from_text(first_user) or "API completion",
            model_name=completion.model,
            system_prompt=system,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            frequency_penalty=request.frequency_penalty,
            source=Conversation.Source.API,
        )
        parent = None
        for turn in turns:
            parent = Message.objects.create(
                conversation=conversation, parent=parent, role=turn["role"], content=turn["content"]
            )
        replies = [_reply(conversation, parent, completion, index) for index in range(len(completion.choices))]
        conversation.active_leaf = replies[0]
        conversation.save(update_fields=["active_leaf", "updated_at"])
    return conversation


def _reply(conversation: Conversation, parent: Message | None, completion: Completion, index: int) -> Message:
    choice = completion.choices[index]
    return Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        content=choice.text,
        status=Message.Status.COMPLETE,
        finish_reason=choice.finish_reason or Message.FinishReason.STOP,
        model_name=completion.model,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens if len(completion.choices) == 1 else None,
        finished_at=timezone.now(),
    )
