"""The conversation websocket: send a message, stop a reply, follow the stream.

Frames from the browser are JSON (htmx's ws extension): ``{"action": "send",
"message": "..."}``, ``{"action": "stop"}``, ``{"action": "regenerate", "message_id":
"<reply>"}`` or ``{"action": "edit", "message_id": "<user message>", "message": "..."}``
(the last two start a new sibling branch and re-render the whole message list), and
``{"action": "continue", "message_id": "<reply>"}`` (a reply that stopped at its token
limit goes on writing, in the same message). Frames to the browser are HTML
fragments with ``hx-swap-oob``; every streamed delta is HTML-escaped, and the Markdown of a
streaming reply is rendered a block at a time (conversations/streaming.py).

The consumer only moves frames: what an action stores is in conversations/socket_actions.py,
and which part of each streaming reply this socket has (so a socket that joined mid-reply,
or missed a delta, resynchronises from the database instead of showing duplicated or
missing text) is decided by conversations/following.py. Each group event about a reply
is handed to the follower, and the frames it returns are sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from conversations import fragments, selectors, socket_actions
from conversations.following import DatabaseSource, ReplyFollower
from conversations.generation import (
    conversation_group,
    generation_dispatch,
)
from conversations.models import Conversation
from conversations.streams import streams_fail_stale
from inference.engine.json_limits import JsonTooDeepError, json_loads_limited

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404


def frame_chars_limit() -> int:
    """The longest frame read: a message at ``CHAT_MAX_MESSAGE_CHARS`` with every character
    escaped (``\\uXXXX``, 6 characters), and room for the other fields."""
    return int(settings.CHAT_MAX_MESSAGE_CHARS) * 6 + 1024


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    conversation: Conversation | None = None  # None on a new chat until its first message stores it

    async def connect(self) -> None:
        user = self.scope.get("user")
        owner_id = user.pk if user is not None and user.is_authenticated else None
        conversation_id: UUID | None = self.scope["url_route"]["kwargs"].get("conversation_id")
        if conversation_id is None:  # a new chat: stored when its first message comes
            if owner_id is None:
                await self.close(code=CLOSE_NOT_FOUND)
                return
            await self.accept()
            await socket_actions.model_warm_up(None)
            return
        conversation = await database_sync_to_async(selectors.conversation_find_for_owner)(
            owner_id=owner_id, public_id=conversation_id
        )
        if conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.join(conversation)
        await self.accept()
        await socket_actions.model_warm_up(conversation.model_name, user=user)
        await self.send_html(*await self.follower.joined())
        self.watchdog = asyncio.get_running_loop().create_task(self.watch())

    async def join(self, conversation: Conversation) -> None:
        self.conversation, self.group = conversation, conversation_group(conversation.public_id)
        self.follower = ReplyFollower(DatabaseSource(conversation))
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        # The reply goes on without this socket: a closed tab never stops a job.
        if self.conversation is not None:
            self.watchdog.cancel()
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch first closes stale database connections, a trip through
        # the one thread all database work shares, before every message: thousands a
        # second with a hundred streams. Every query here goes through
        # database_sync_to_async, which does that closing itself, so this skips it.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Empty or binary frames are answered like unreadable JSON, never with a crash.
        if text_data and len(text_data) > frame_chars_limit():
            await self.send_error(f"That message is over the limit of {frame_chars_limit():,} characters a frame.")
            return
        try:
            content = json_loads_limited(text_data) if text_data else None
        except JsonTooDeepError as exc:
            await self.send_error(f"That message is nested more than {exc.limit} levels deep; send plain text.")
            return
        except ValueError:
            content = None  # unreadable
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_error("That message could not be read; reload the page and try again.")
            return
        if content.get("action") == "stop" and self.conversation is not None:
            await socket_actions.replies_stop(self.conversation)
            return
        store = socket_actions.action_for(
            content, conversation=self.conversation, owner=self.scope.get("user"), session=self.scope.get("session")
        )
        if store is None:
            if self.conversation is not None:  # a new chat has nothing to stop or change yet
                await self.send_error("Unknown action.")
            return
        try:
            started = await database_sync_to_async(store)()
        except ValidationError as exc:
            await self.send_error(" ".join(exc.messages))
            return
        if self.conversation is None:  # the new chat is stored: follow it like any other
            await self.join(started.conversation)
            self.watchdog = asyncio.get_running_loop().create_task(self.watch())
            await self.send_html(started.created)
        await self.send_html(fragments.composer_error(""))
        await self.channel_layer.group_send(self.group, started.event)
        await generation_dispatch(message_pk=started.message_pk, context=started.job)

    # -- Events from the conversation's group: the follower decides what to send ------

    async def chat_turn(self, event: dict[str, Any]) -> None:
        await self.send_html(*self.follower.turn_started(event["message_id"], event["html"]))

    async def chat_branch(self, event: dict[str, Any]) -> None:
        await self.send_html(*await self.follower.branch_started(event["message_id"]))

    async def chat_continued(self, event: dict[str, Any]) -> None:
        await self.send_html(*await self.follower.continued(event["message_id"]))

    async def chat_delta(self, event: dict[str, Any]) -> None:
        await self.send_html(*await self.follower.delta(event["message_id"], int(event["seq"]), event["text"]))

    async def chat_trimmed(self, event: dict[str, Any]) -> None:
        cut = event.get("cut", 0)
        await self.send_html(
            fragments.trimmed_notice(message_id=event["message_id"], dropped=event["dropped"], cut=cut)
        )

    async def chat_unsaved(self, event: dict[str, Any]) -> None:
        await self.send_html(fragments.unsaved_notice(message_id=event["message_id"]))

    async def chat_finished(self, event: dict[str, Any]) -> None:
        await self.send_html(*await self.follower.finished(event["message_id"], announce=not event.get("quiet")))

    async def watch(self) -> None:
        """Every few seconds: rejoin the group (it survives a Redis restart), and when a
        reply went quiet, fail replies whose worker died and catch up on what this missed."""
        assert self.conversation is not None
        while True:
            await asyncio.sleep(settings.CHAT_SOCKET_WATCH_SECONDS)
            try:
                await self.channel_layer.group_add(self.group, self.channel_name)
            except Exception:  # the layer is down; the database still tells the truth
                logger.warning("Channel layer unavailable for %s", self.group)
            quiet = self.follower.quiet()
            if not quiet:
                continue  # nothing in flight here, or all of it arriving live
            for ended in await database_sync_to_async(streams_fail_stale)(conversation_pk=self.conversation.pk):
                await self.notify_group({"type": "chat.finished", "message_id": ended.message_id})
            for message_id in quiet:
                await self.send_html(*await self.follower.catch_up(message_id))

    async def notify_group(self, event: dict[str, Any]) -> None:
        try:
            await self.channel_layer.group_send(self.group, event)
        except Exception:
            await getattr(self, event["type"].replace(".", "_"))(event)

    async def send_error(self, text: str) -> None:
        await self.send_html(fragments.composer_error(text))

    async def send_html(self, *frames: str) -> None:
        for html in frames:
            await self.send(text_data=html)
