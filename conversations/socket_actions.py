"""What the conversation socket's actions do, away from the socket.

A browser's frame asks for a new turn, a new chat, a regenerated or edited branch, more
of a reply, or a stop. Each new reply is stored in one trip to the database thread (the
one thread every socket's and job's database work queues for): ``action_for`` picks the
storing function, which returns a ``StartedReply``, the group event that shows the reply
on every tab and what its job needs; the socket (conversations/consumers.py) runs it,
sends the event and starts the job. Nothing here reads or sends frames, so each action is
a plain function of its arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from channels.db import database_sync_to_async

from conversations import fragments, selectors, services
from conversations.generation import JobContext, generation_cancel_local, generation_runs_here, job_context_load
from conversations.models import Conversation
from conversations.new_chat import new_chat_settings, new_chat_settings_clear, session_as_stored
from inference import registry
from inference.runtime import process_runtime


@dataclass(frozen=True)
class StartedReply:
    """A reply an action started: the event that shows it on every tab, and its job."""

    conversation: Conversation
    message_pk: int
    event: dict[str, Any]  # for the conversation's group: chat.turn, chat.branch or chat.continued
    job: JobContext | None = None  # what a new turn's job needs, when the job runs in this process
    created: str = ""  # a new chat's header, sidebar entry and address, for the tab that made it


def action_for(
    content: dict[str, Any], *, conversation: Conversation | None, owner: Any, session: Any
) -> Callable[[], StartedReply] | None:
    """The storing that the frame ``content`` asks for, to run on the database thread; None
    when there is none: an unknown action, or anything but "send" on a new chat (a stop is
    ``replies_stop``)."""
    action = content.get("action", "send")
    if conversation is None:  # a new chat: its first message stores it
        if action != "send":
            return None
        return partial(
            conversation_start_for_socket,
            owner=owner,
            text=content.get("message"),
            session=session,
            attachments=content.get("attachment"),
        )
    if action == "send":
        return partial(
            turn_start_for_socket,
            conversation=conversation,
            text=content.get("message"),
            attachments=content.get("attachment"),
        )
    if action == "regenerate":
        return partial(
            branch_start_for_socket,
            services.reply_regenerate,
            conversation=conversation,
            message_id=content.get("message_id"),
        )
    if action == "edit":
        return partial(
            branch_start_for_socket,
            services.message_edit,
            conversation=conversation,
            message_id=content.get("message_id"),
            text=content.get("message"),
        )
    if action == "continue":
        return partial(reply_continue_for_socket, conversation=conversation, message_id=content.get("message_id"))
    return None


def turn_start_for_socket(*, conversation: Conversation, text: object, attachments: object = None) -> StartedReply:
    """Store the turn, render it and read what its job needs, in one trip to the database thread."""
    turn = services.turn_start(conversation=conversation, text=text, attachments=attachments)
    return _started(conversation, turn)


def conversation_start_for_socket(
    *, owner: Any, text: object, session: Any, attachments: object = None
) -> StartedReply:
    """Store a new chat with its first turn, on the settings its page chose (in the session)."""
    session = session_as_stored(session)
    chosen = new_chat_settings(session)
    turn = services.conversation_start(owner=owner, text=text, chosen=chosen, attachments=attachments)
    new_chat_settings_clear(session)
    conversation = turn.assistant_message.conversation
    return _started(conversation, turn, created=fragments.conversation_created(conversation=conversation))


def _started(conversation: Conversation, turn: services.Turn, created: str = "") -> StartedReply:
    reply = turn.assistant_message
    html = fragments.turn_started(user_message=turn.user_message, reply=reply, conversation=conversation)
    job = job_context_load(message_pk=reply.pk) if generation_runs_here() else None
    event = {"type": "chat.turn", "message_id": str(reply.public_id), "html": html}
    return StartedReply(conversation=conversation, message_pk=reply.pk, event=event, job=job, created=created)


def branch_start_for_socket(
    service: Callable[..., services.Turn], *, conversation: Conversation, **arguments: Any
) -> StartedReply:
    """Regenerate a reply or resend an edited message: a new sibling branch, then a normal
    reply. Every tab shows the whole message list again (``chat.branch``)."""
    reply = service(conversation=conversation, **arguments).assistant_message
    event = {"type": "chat.branch", "message_id": str(reply.public_id)}
    return StartedReply(conversation=conversation, message_pk=reply.pk, event=event)


def reply_continue_for_socket(*, conversation: Conversation, message_id: object) -> StartedReply:
    """Go on writing a reply that stopped at its token limit, in the same message."""
    reply = services.reply_continue(conversation=conversation, message_id=message_id).assistant_message
    event = {"type": "chat.continued", "message_id": str(reply.public_id)}
    return StartedReply(conversation=conversation, message_pk=reply.pk, event=event)


async def replies_stop(conversation: Conversation) -> None:
    """Stop every reply streaming in ``conversation``; each job keeps what it wrote. Jobs in
    this process stop at once, the others when they next read the flag in the database."""
    for message_pk in await database_sync_to_async(_replies_request_cancel)(conversation=conversation):
        generation_cancel_local(message_pk=message_pk)


def _replies_request_cancel(*, conversation: Conversation) -> list[int]:
    streaming = selectors.conversation_streaming_messages(conversation=conversation)
    for message in streaming:
        services.assistant_message_request_cancel(message=message)
    return [message.pk for message in streaming]


async def model_warm_up(model_id: str | None, *, user: Any = None) -> None:
    """When replies are generated in this process, start loading the chat's model (the
    default one for a new chat) as its socket opens, so it is ready by the time they have typed."""
    if generation_runs_here():
        model_id = registry.default_model_id() if model_id is None else model_id
        spec = await database_sync_to_async(registry.model_get)(model_id, user=user)
        if spec is not None:
            process_runtime().warm_up(spec)
