"""Which part of each streaming reply one socket has, and what to send it next.

Every piece of a streaming reply reaches the conversation's group as a delta numbered in
order (``seq``). A socket can still end up with a reply that is wrong: it joined mid-reply,
a delta was lost on the way (a full channel layer drops messages), a job died without
saying so, or the socket was away when a reply ended. So each socket follows its replies:
for each one streaming it keeps the last seq it has and the Markdown it has sent
(``conversations.streaming.StreamRender``). A delta right after that seq is fed to the
render; a repeated or older one is dropped; one past a gap is repaired from the database,
which the job writes a little behind the live deltas. Every few seconds the socket also
asks about replies that went quiet, and sends whatever the database has that it does not.

``ReplyFollower`` holds those decisions and nothing else: no socket, no channel layer and
no clock. What it reads comes through a ``ReplySource`` (``DatabaseSource`` in the
server), the pause between resync attempts is passed in, and every call returns the HTML
frames to send, in order. The consumer (conversations/consumers.py) sends them;
tests/conversations/test_reply_follower.py drives it directly with a fake source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from conversations import fragments, selectors
from conversations.models import Conversation, Message
from conversations.selectors import StreamSnapshot
from conversations.streaming import StreamRender

RESYNC_ATTEMPTS = 20


class ReplySource(Protocol):
    """The database reads that following one conversation's replies needs."""

    async def snapshot(self, message_id: str) -> StreamSnapshot | None:
        """What the database has of one reply (None if not in this conversation)."""
        ...

    async def streaming(self) -> list[StreamSnapshot]:
        """Every reply of the conversation still streaming."""
        ...

    async def recently_finished(self) -> list[str]:
        """The public ids of replies that ended in the last few minutes, newest first."""
        ...

    async def branch_started(self, message_id: str) -> tuple[str, int]:
        """The message list with the new branch, and its reply's seq."""
        ...

    async def reply_continued(self, message_id: str) -> tuple[str, int, str]:
        """A continued reply streaming again: its HTML, seq and text so far."""
        ...

    async def reply_finished(self, message_id: str, *, announce: bool) -> str:
        """The finished reply as every tab shows it."""
        ...


class DatabaseSource:
    """The reads of ``ReplySource`` from the database, each one trip to the database thread."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    async def snapshot(self, message_id: str) -> StreamSnapshot | None:
        return await database_sync_to_async(selectors.message_stream_snapshot)(
            conversation=self.conversation, message_id=message_id
        )

    async def streaming(self) -> list[StreamSnapshot]:
        return await database_sync_to_async(_streaming_snapshots)(self.conversation)

    async def recently_finished(self) -> list[str]:
        return await database_sync_to_async(selectors.conversation_recently_finished)(conversation=self.conversation)

    async def branch_started(self, message_id: str) -> tuple[str, int]:
        return await database_sync_to_async(fragments.branch_started)(
            conversation_pk=self.conversation.pk, message_id=message_id
        )

    async def reply_continued(self, message_id: str) -> tuple[str, int, str]:
        return await database_sync_to_async(fragments.reply_continued)(message_id=message_id)

    async def reply_finished(self, message_id: str, *, announce: bool) -> str:
        return await database_sync_to_async(fragments.reply_finished)(message_id=message_id, announce=announce)


def _streaming_snapshots(conversation: Conversation) -> list[StreamSnapshot]:
    return [
        StreamSnapshot(message.public_id, message.content, message.stream_seq, message.status)
        for message in selectors.conversation_streaming_messages(conversation=conversation)
    ]


async def flush_pause() -> None:
    """Wait about as long as a job takes to write its next deltas to the database."""
    await asyncio.sleep(settings.INFERENCE_FLUSH_INTERVAL_MS / 1000)


class ReplyFollower:
    """One socket's replies: which delta of each it has, and the frames that keep its page right.

    The socket calls it from two tasks (its group events, and its watch), which take turns
    whenever one waits for the database. So each decision is taken after the last read it
    depends on, and the frames a call returns are to be sent as soon as it returns.
    """

    def __init__(self, source: ReplySource, *, pause: Callable[[], Awaitable[None]] = flush_pause) -> None:
        self.source = source
        self.pause = pause  # between resync attempts
        self.seqs: dict[str, int] = {}  # each streaming reply's last delta this socket has
        self.renders: dict[str, StreamRender] = {}  # each streaming reply's Markdown as sent here
        self.advanced: set[str] = set()  # replies whose deltas arrived since the last watch

    def follow(self, message_id: str, seq: int, text: str = "") -> StreamRender:
        """From now on this socket has ``text`` of the reply, up to delta ``seq``."""
        self.seqs[message_id] = seq
        self.renders[message_id] = StreamRender(message_id, text)
        return self.renders[message_id]

    # -- Events from the conversation's group ---------------------------------------

    def turn_started(self, message_id: str, html: str) -> list[str]:
        self.follow(message_id, 0)
        return [html]

    async def branch_started(self, message_id: str) -> list[str]:
        html, seq = await self.source.branch_started(message_id)
        self.follow(message_id, seq)
        return [html]

    async def continued(self, message_id: str) -> list[str]:
        html, seq, text = await self.source.reply_continued(message_id)
        self.follow(message_id, seq, text)
        return [html]

    async def delta(self, message_id: str, seq: int, text: str) -> list[str]:
        have = self.seqs.get(message_id)
        if have is not None and seq <= have:
            return []  # sent already
        if have is not None and seq == have + 1:
            self.seqs[message_id] = seq
            self.advanced.add(message_id)
            render = self.renders.get(message_id) or self.follow(message_id, seq)
            return [render.feed(text)]
        return await self.resync(message_id=message_id, seq=seq, text=text)

    async def finished(self, message_id: str, *, announce: bool = True) -> list[str]:
        """The whole reply rendered once more, replacing the streaming one; it is not followed any more."""
        self.seqs.pop(message_id, None)
        self.renders.pop(message_id, None)
        return [await self.source.reply_finished(message_id, announce=announce)]

    # -- Joining, catching up ---------------------------------------------------------

    async def joined(self) -> list[str]:
        """For a socket that just opened: each streaming reply as the database has it (live
        deltas follow), then the replies that ended while it was away (it may be a tab
        coming back after a dropped connection), quietly."""
        frames = [self.follow(str(s.message_id), s.seq, s.content).snapshot() for s in await self.source.streaming()]
        for message_id in await self.source.recently_finished():
            frames += await self.finished(message_id, announce=False)
        return frames

    def quiet(self) -> list[str]:
        """The replies followed here whose deltas stopped arriving since the last call.

        A reply whose deltas kept arriving in order needs no catching up: its job is
        alive, and a gap would have been repaired by the next delta.
        """
        quiet = [message_id for message_id in self.seqs if message_id not in self.advanced]
        self.advanced.clear()
        return quiet

    async def catch_up(self, message_id: str) -> list[str]:
        """A quiet reply as the database has it now, if it has more than this socket.

        One reply a call: a delta handled while the next reply is read must not be
        followed by this one's (older) snapshot.
        """
        have = self.seqs.get(message_id)
        if have is None:
            return []  # finished meanwhile
        snapshot = await self.source.snapshot(message_id)
        if snapshot is None or self.seqs.get(message_id) != have:
            return []  # gone, or a delta came while the database was read
        if snapshot.status != Message.Status.STREAMING:
            return await self.finished(message_id)
        if snapshot.seq > have:
            return [self.follow(message_id, snapshot.seq, snapshot.content).snapshot()]
        return []

    async def resync(self, *, message_id: str, seq: int, text: str) -> list[str]:
        """A delta arrived ahead of what this socket has: catch up from the database,
        waiting for it while the job's writes are behind that delta."""
        for _ in range(RESYNC_ATTEMPTS):
            snapshot = await self.source.snapshot(message_id)
            if snapshot is None or snapshot.status != Message.Status.STREAMING:
                return []  # the finished event re-renders the whole reply
            if snapshot.seq >= seq - 1:
                content = snapshot.content + (text if snapshot.seq == seq - 1 else "")
                return [self.follow(message_id, max(snapshot.seq, seq), content).snapshot()]
            await self.pause()
        return []
