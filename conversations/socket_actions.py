"""What the conversation socket's actions store, away from the socket.

A browser's frame asks for a new turn, a new chat, a regenerated or edited branch, more
of a reply, or a stop. Each is stored here in one trip to the database thread (the one
thread every socket's and job's database work queues for), and comes back as what the
socket then tells every tab and which job it starts; the socket itself only reads frames
and sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conversations import fragments, services
from conversations.generation import JobContext, generation_runs_here, job_context_load
from conversations.models import Conversation
from conversations.new_chat import new_chat_settings, new_chat_settings_clear, session_as_stored


@dataclass(frozen=True)
class StartedTurn:
    turn: services.Turn
    html: str  # the turn as every tab shows it
    job: JobContext | None  # what its generation job needs, when the job runs in this process
    created: str = ""  # a new chat's header, sidebar entry and address, for the tab that made it


def turn_start_for_socket(*, conversation: Conversation, text: object, attachments: object = None) -> StartedTurn:
    """Store the turn, render it and read what its job needs, in one trip to the
    database thread (the one thread every socket's and job's database work queues for)."""
    turn = services.turn_start(conversation=conversation, text=text, attachments=attachments)
    return _started(conversation, turn)


def conversation_start_for_socket(*, owner: Any, text: object, session: Any, attachments: object = None) -> StartedTurn:
    """Store a new chat with its first turn, on the settings its page chose (in the session)."""
    session = session_as_stored(session)
    chosen = new_chat_settings(session)
    turn = services.conversation_start(owner=owner, text=text, chosen=chosen, attachments=attachments)
    new_chat_settings_clear(session)
    conversation = turn.assistant_message.conversation
    return _started(conversation, turn, created=fragments.conversation_created(conversation=conversation))


def _started(conversation: Conversation, turn: services.Turn, created: str = "") -> StartedTurn:
    html = fragments.turn_started(
        user_message=turn.user_message, reply=turn.assistant_message, conversation=conversation
    )
    job = job_context_load(message_pk=turn.assistant_message.pk) if generation_runs_here() else None
    return StartedTurn(turn=turn, html=html, job=job, created=created)
