"""The conversation websocket: send a message, stop a reply, follow the stream.

Frames from the browser are JSON (htmx's ws extension): ``{"action": "send",
"message": "..."}``, ``{"action": "stop"}``, ``{"action": "regenerate", "message_id":
"<reply>"}`` or ``{"action": "edit", "message_id": "<user message>", "message": "..."}``
(the last two start a new sibling branch and re-render the whole message list), and
``{"action": "continue", "message_id": "<reply>"}`` (a reply that stopped at its token
limit goes on writing, in the same message). Frames to the browser are HTML
fragments with ``hx-swap-oob``; every streamed delta is HTML-escaped, and the Markdown of a
streaming reply is rendered a block at a time (conversations/streaming.py). The consumer
tracks each reply's sequence number so a socket that joined mid-reply, or missed a
delta, resynchronises from the database instead of showing duplicated or missing text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from conversations import fragments, selectors, services
from conversations.generation import (
    conversation_group,
    generation_cancel_local,
    generation_dispatch,
    generation_runs_here,
)
from conversations.models import Conversation, Message
from conversations.socket_actions import StartedTurn, conversation_start_for_socket, turn_start_for_socket
from conversations.streaming import StreamRender
from conversations.streams import streams_fail_stale
from inference import engines, registry
from inference.engine.json_limits import JsonTooDeepError, json_loads_limited

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
RESYNC_ATTEMPTS = 20


def frame_chars_limit() -> int:
    """The longest frame read: a message at ``CHAT_MAX_MESSAGE_CHARS`` with every character
    escaped (``\\uXXXX``, 6 characters), and room for the other fields."""
    return int(settings.CHAT_MAX_MESSAGE_CHARS) * 6 + 1024


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    conversation: Conversation | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        conversation_id: UUID | None = self.scope["url_route"]["kwargs"].get("conversation_id")
        owner_id = user.pk if user is not None and user.is_authenticated else None
        if conversation_id is None:  # a new chat: stored when its first message comes
            await self.connect_new_chat(owner_id)
            return
        self.conversation = await database_sync_to_async(selectors.conversation_find_for_owner)(
            owner_id=owner_id, public_id=conversation_id
        )
        if self.conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = conversation_group(self.conversation.public_id)
        self.seqs: dict[str, int] = {}
        self.renders: dict[str, StreamRender] = {}  # each streaming reply's Markdown as sent here
        self.advanced: set[str] = set()  # replies whose deltas arrived since the last watch
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if generation_runs_here():
            spec = await database_sync_to_async(registry.model_get)(self.conversation.model_name, user=user)
            if spec is not None:
                engines.warm_up(spec)
        await self.send_snapshots()
        await self.send_recent_finals()
        self.watchdog = asyncio.get_running_loop().create_task(self.watch())

    async def connect_new_chat(self, owner_id: int | None) -> None:
        if owner_id is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.seqs, self.renders, self.advanced = {}, {}, set()
        await self.accept()
        if generation_runs_here():
            spec = await database_sync_to_async(registry.model_get)(registry.default_model_id())
            if spec is not None:
                engines.warm_up(spec)

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
            content = await self.decode_json(text_data) if text_data else None
        except JsonTooDeepError as exc:
            await self.send_error(f"That message is nested more than {exc.limit} levels deep; send plain text.")
            return
        await self.receive_json(content, **kwargs)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        """The frame's JSON, None if unreadable; JsonTooDeepError past the nesting limit."""
        try:
            return json_loads_limited(text_data)
        except JsonTooDeepError:
            raise
        except ValueError:
            return None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_error("That message could not be read; reload the page and try again.")
            return
        action = content.get("action", "send")
        if self.conversation is None:  # a new chat: nothing to stop or change before its first message
            if action == "send":
                await self.start_new_chat(content.get("message"), content.get("attachment"))
        elif action == "stop":
            await self.stop_replies()
        elif action == "send":
            await self.start_turn(content.get("message"), content.get("attachment"))
        elif action == "regenerate":
            await self.start_branch(services.reply_regenerate, message_id=content.get("message_id"))
        elif action == "continue":
            await self.start_continue(content.get("message_id"))
        elif action == "edit":
            await self.start_branch(
                services.message_edit, message_id=content.get("message_id"), text=content.get("message")
            )
        else:
            await self.send_error("Unknown action.")

    # -- Actions from this browser ------------------------------------------------

    async def start_turn(self, text: Any, attachments: Any = None) -> None:
        assert self.conversation is not None
        try:
            started = await database_sync_to_async(turn_start_for_socket)(
                conversation=self.conversation, text=text, attachments=attachments
            )
        except ValidationError as exc:
            await self.send_error(" ".join(exc.messages))
            return
        await self.announce_turn(started)

    async def start_new_chat(self, text: Any, attachments: Any = None) -> None:
        """The first message of a new chat: store the chat, then follow it like any other."""
        try:
            started = await database_sync_to_async(conversation_start_for_socket)(
                owner=self.scope["user"], text=text, session=self.scope["session"], attachments=attachments
            )
        except ValidationError as exc:
            await self.send_error(" ".join(exc.messages))
            return
        self.conversation = started.turn.assistant_message.conversation
        self.group = conversation_group(self.conversation.public_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.watchdog = asyncio.get_running_loop().create_task(self.watch())
        await self.send_html(started.created)
        await self.announce_turn(started)

    async def announce_turn(self, started: StartedTurn) -> None:
        reply = started.turn.assistant_message
        await self.send_html(fragments.composer_error(""))
        await self.channel_layer.group_send(
            self.group, {"type": "chat.turn", "message_id": str(reply.public_id), "html": started.html}
        )
        await generation_dispatch(message_pk=reply.pk, context=started.job)

    async def start_branch(self, service: Callable[..., services.Turn], **arguments: Any) -> None:
        """Regenerate a reply or resend an edited message: a new sibling branch, then a normal reply."""
        assert self.conversation is not None
        try:
            turn = await database_sync_to_async(service)(conversation=self.conversation, **arguments)
        except ValidationError as exc:
            await self.send_error(" ".join(exc.messages))
            return
        await self.send_html(fragments.composer_error(""))
        await self.channel_layer.group_send(
            self.group, {"type": "chat.branch", "message_id": str(turn.assistant_message.public_id)}
        )
        await generation_dispatch(message_pk=turn.assistant_message.pk)

    async def start_continue(self, message_id: Any) -> None:
        """Go on writing a reply that stopped at its token limit, in the same message."""
        assert self.conversation is not None
        try:
            turn = await database_sync_to_async(services.reply_continue)(
                conversation=self.conversation, message_id=message_id
            )
        except ValidationError as exc:
            await self.send_error(" ".join(exc.messages))
            return
        await self.send_html(fragments.composer_error(""))
        await self.channel_layer.group_send(
            self.group, {"type": "chat.continued", "message_id": str(turn.assistant_message.public_id)}
        )
        await generation_dispatch(message_pk=turn.assistant_message.pk)

    async def stop_replies(self) -> None:
        assert self.conversation is not None
        streaming = await database_sync_to_async(selectors.conversation_streaming_messages)(
            conversation=self.conversation
        )
        for message in streaming:
            await database_sync_to_async(services.assistant_message_request_cancel)(message=message)
            generation_cancel_local(message_pk=message.pk)

    # -- Events from the conversation's group ---------------------------------------

    def follow(self, message_id: str, seq: int, text: str = "") -> StreamRender:
        """From now on this socket has ``text`` of the reply, up to delta ``seq``."""
        self.seqs[message_id] = seq
        self.renders[message_id] = StreamRender(message_id, text)
        return self.renders[message_id]

    async def chat_turn(self, event: dict[str, Any]) -> None:
        self.follow(event["message_id"], 0)
        await self.send_html(event["html"])

    async def chat_branch(self, event: dict[str, Any]) -> None:
        assert self.conversation is not None
        html, seq = await database_sync_to_async(fragments.branch_started)(
            conversation_pk=self.conversation.pk, message_id=event["message_id"]
        )
        self.follow(event["message_id"], seq)
        await self.send_html(html)

    async def chat_continued(self, event: dict[str, Any]) -> None:
        html, seq, text = await database_sync_to_async(fragments.reply_continued)(message_id=event["message_id"])
        self.follow(event["message_id"], seq, text)
        await self.send_html(html)

    async def chat_delta(self, event: dict[str, Any]) -> None:
        message_id, seq = event["message_id"], int(event["seq"])
        have = self.seqs.get(message_id)
        if have is not None and seq <= have:
            return
        if have is not None and seq == have + 1:
            self.seqs[message_id] = seq
            self.advanced.add(message_id)
            render = self.renders.get(message_id) or self.follow(message_id, seq)
            await self.send_html(render.feed(event["text"]))
            return
        await self.resync(message_id=message_id, seq=seq, text=event["text"])

    async def chat_trimmed(self, event: dict[str, Any]) -> None:
        notice = fragments.trimmed_notice(message_id=event["message_id"], dropped=event["dropped"], cut=event.get("cut", 0))
        await self.send_html(notice)

    async def chat_unsaved(self, event: dict[str, Any]) -> None:
        await self.send_html(fragments.unsaved_notice(message_id=event["message_id"]))

    async def chat_finished(self, event: dict[str, Any]) -> None:
        self.seqs.pop(event["message_id"], None)
        self.renders.pop(event["message_id"], None)
        html = await database_sync_to_async(fragments.reply_finished)(
            message_id=event["message_id"], announce=not event.get("quiet")
        )
        await self.send_html(html)

    # -- Helpers --------------------------------------------------------------------

    async def send_snapshots(self) -> None:
        """Show each streaming reply as the database has it; live deltas follow."""
        assert self.conversation is not None
        streaming = await database_sync_to_async(selectors.conversation_streaming_messages)(
            conversation=self.conversation
        )
        for message in streaming:
            render = self.follow(str(message.public_id), message.stream_seq, message.content)
            await self.send_html(render.snapshot())

    async def send_recent_finals(self) -> None:
        """After a dropped connection, replace replies that ended while it was down."""
        assert self.conversation is not None
        recent = await database_sync_to_async(selectors.conversation_recently_finished)(conversation=self.conversation)
        for message_id in recent:
            await self.chat_finished({"message_id": message_id, "quiet": True})

    async def watch(self) -> None:
        """Every few seconds: rejoin the group (it survives a Redis restart), fail
        replies whose worker died, and catch up on anything this socket missed.

        A reply whose deltas kept arriving in order needs neither: its job is alive,
        and a gap would have been repaired by the next delta.
        """
        assert self.conversation is not None
        while True:
            await asyncio.sleep(settings.CHAT_SOCKET_WATCH_SECONDS)
            try:
                await self.channel_layer.group_add(self.group, self.channel_name)
            except Exception:  # the layer is down; the database still tells the truth
                logger.warning("Channel layer unavailable for %s", self.group)
            quiet = [message_id for message_id in self.seqs if message_id not in self.advanced]
            self.advanced.clear()
            if not quiet:
                continue  # nothing in flight here, or all of it arriving live
            ended = await database_sync_to_async(streams_fail_stale)(conversation_pk=self.conversation.pk)
            for stream in ended:
                await self.notify_group({"type": "chat.finished", "message_id": stream.message_id})
            await self.catch_up(quiet)

    async def catch_up(self, message_ids: list[str]) -> None:
        for message_id in message_ids:
            have = self.seqs.get(message_id)
            if have is None:
                continue  # finished meanwhile
            snapshot = await database_sync_to_async(selectors.message_stream_snapshot)(
                conversation=self.conversation, message_id=message_id
            )
            if snapshot is None or self.seqs.get(message_id) != have:
                continue
            if snapshot.status != Message.Status.STREAMING:
                await self.chat_finished({"message_id": message_id})
            elif snapshot.seq > have:
                await self.send_html(self.follow(message_id, snapshot.seq, snapshot.content).snapshot())

    async def notify_group(self, event: dict[str, Any]) -> None:
        try:
            await self.channel_layer.group_send(self.group, event)
        except Exception:
            await getattr(self, event["type"].replace(".", "_"))(event)

    async def resync(self, *, message_id: str, seq: int, text: str) -> None:
        """A delta arrived ahead of what this socket has: catch up from the database."""
        pause = settings.INFERENCE_FLUSH_INTERVAL_MS / 1000
        for _ in range(RESYNC_ATTEMPTS):
            snapshot = await database_sync_to_async(selectors.message_stream_snapshot)(
                conversation=self.conversation, message_id=message_id
            )
            if snapshot is None or snapshot.status != Message.Status.STREAMING:
                return  # the finished event re-renders the whole reply
            if snapshot.seq >= seq - 1:
                content = snapshot.content + (text if snapshot.seq == seq - 1 else "")
                await self.send_html(self.follow(message_id, max(snapshot.seq, seq), content).snapshot())
                return
            await asyncio.sleep(pause)

    async def send_error(self, text: str) -> None:
        await self.send_html(fragments.composer_error(text))

    async def send_html(self, html: str) -> None:
        await self.send(text_data=html)
