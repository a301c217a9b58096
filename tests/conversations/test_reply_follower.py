"""Following streaming replies (conversations/following.py), without a socket: group events
and database snapshots go in, the frames a socket would send come out. The database is a
fake source whose answers each test sets, and the pause between resync attempts is a
call the test counts (and may use to let the "job" write more), so nothing here sleeps
or depends on timing.

Every delta's text here is plain words, no new line: a StreamRender sends it as the
delta alone (no block closes, and no markup makes the tail due for rendering again).
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from uuid import UUID

from conversations.following import RESYNC_ATTEMPTS, ReplyFollower
from conversations.selectors import StreamSnapshot

REPLY = "0c5e4f5e-1111-4222-8333-944445555666"
OTHER = "7d1a0b2c-2222-4333-8444-a55556666777"
SNAPSHOT = re.compile(
    r'^<div id="m-([0-9a-f-]+)-text" class="msg-text markdown is-streaming" hx-swap-oob="true">'
    r'.*<template class="stream-source">(.*?)</template></div>$',
    re.S,
)


def delta_frame(message_id: str, text: str) -> str:
    return f'<span hx-swap-oob="beforeend:#m-{message_id}-pending">{text}</span>'


def snapshot_of(frame: str) -> tuple[str, str]:
    """The reply a snapshot frame replaces, and the whole text it carries."""
    match = SNAPSHOT.match(frame)
    assert match is not None, frame
    return match.group(1), html.unescape(match.group(2))


def streaming(message_id: str, content: str, seq: int) -> StreamSnapshot:
    return StreamSnapshot(UUID(message_id), content, seq, "streaming")


def ended(message_id: str, content: str, seq: int, status: str = "complete") -> StreamSnapshot:
    return StreamSnapshot(UUID(message_id), content, seq, status)


class FakeSource:
    """The database as a test sets it. ``rows`` is what a snapshot read of each reply
    returns now; ``on_read`` runs during a read, as other events would while the socket
    waits for the database thread."""

    def __init__(self) -> None:
        self.rows: dict[str, StreamSnapshot] = {}
        self.streaming_rows: list[StreamSnapshot] = []
        self.finished_ids: list[str] = []
        self.branch_seq = 0
        self.continued: tuple[int, str] = (0, "")
        self.reads: list[str] = []
        self.on_read: Callable[[], Awaitable[None]] | None = None

    async def snapshot(self, message_id: str) -> StreamSnapshot | None:
        self.reads.append(message_id)
        if self.on_read is not None:
            await self.on_read()
        return self.rows.get(message_id)

    async def streaming(self) -> list[StreamSnapshot]:
        return list(self.streaming_rows)

    async def recently_finished(self) -> list[str]:
        return list(self.finished_ids)

    async def branch_started(self, message_id: str) -> tuple[str, int]:
        return f"<branch {message_id}>", self.branch_seq

    async def reply_continued(self, message_id: str) -> tuple[str, int, str]:
        seq, text = self.continued
        return f"<continued {message_id}>", seq, text

    async def reply_finished(self, message_id: str, *, announce: bool) -> str:
        return f"<finished {message_id} announce={announce}>"


class Pauses:
    """The pause between resync attempts: counted, and each may let the job write more."""

    def __init__(self, between: Callable[[int], None] | None = None) -> None:
        self.count = 0
        self.between = between

    async def __call__(self) -> None:
        self.count += 1
        if self.between is not None:
            self.between(self.count)


def follower_with(source: FakeSource, pauses: Pauses | None = None) -> ReplyFollower:
    return ReplyFollower(source, pause=pauses or Pauses())


# -- Deltas in order, repeated, and after a gap ------------------------------------------


async def test_deltas_in_order_are_sent_as_deltas() -> None:
    source = FakeSource()
    follower = follower_with(source)
    assert follower.turn_started(REPLY, "<turn>") == ["<turn>"]
    assert await follower.delta(REPLY, 1, "Hello") == [delta_frame(REPLY, "Hello")]
    assert await follower.delta(REPLY, 2, " there") == [delta_frame(REPLY, " there")]
    assert follower.seqs[REPLY] == 2
    assert follower.renders[REPLY].text == "Hello there"
    assert source.reads == [], "nothing was read from the database"


async def test_a_delta_is_escaped() -> None:
    follower = follower_with(FakeSource())
    follower.turn_started(REPLY, "<turn>")
    assert await follower.delta(REPLY, 1, "a <b>") == [delta_frame(REPLY, "a &lt;b&gt;")]


async def test_a_repeated_or_older_delta_is_dropped() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    await follower.delta(REPLY, 2, " two")
    assert await follower.delta(REPLY, 2, " two") == []
    assert await follower.delta(REPLY, 1, "one") == []
    assert follower.seqs[REPLY] == 2 and follower.renders[REPLY].text == "one two"
    assert source.reads == []


async def test_a_gap_is_filled_from_the_snapshot_when_the_database_has_the_missing_deltas() -> None:
    source = FakeSource()
    pauses = Pauses()
    follower = follower_with(source, pauses)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    # Delta 2 was lost; the database has it and delta 3 as well.
    source.rows[REPLY] = streaming(REPLY, "one two three", 3)
    [frame] = await follower.delta(REPLY, 3, " three")
    assert snapshot_of(frame) == (REPLY, "one two three"), "the database's text, without the delta twice"
    assert follower.seqs[REPLY] == 3 and pauses.count == 0
    assert await follower.delta(REPLY, 4, " four") == [delta_frame(REPLY, " four")], "live deltas follow"


async def test_a_snapshot_one_behind_the_delta_gets_the_delta_appended() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    source.rows[REPLY] = streaming(REPLY, "one two", 2)  # the job has not written delta 3 yet
    [frame] = await follower.delta(REPLY, 3, " three")
    assert snapshot_of(frame) == (REPLY, "one two three")
    assert follower.seqs[REPLY] == 3
    assert await follower.delta(REPLY, 3, " three") == []


async def test_a_snapshot_further_behind_is_read_again_after_each_pause_until_it_catches_up() -> None:
    source = FakeSource()
    source.rows[REPLY] = streaming(REPLY, "one", 1)

    def job_writes(count: int) -> None:  # the job's next write lands during the second pause
        if count == 2:
            source.rows[REPLY] = streaming(REPLY, "one two three four", 4)

    pauses = Pauses(job_writes)
    follower = follower_with(source, pauses)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    [frame] = await follower.delta(REPLY, 5, " five")
    assert snapshot_of(frame) == (REPLY, "one two three four five")
    assert pauses.count == 2 and source.reads == [REPLY] * 3
    assert follower.seqs[REPLY] == 5


async def test_a_resync_gives_up_after_its_attempts_and_keeps_waiting_for_the_next_delta() -> None:
    source = FakeSource()
    source.rows[REPLY] = streaming(REPLY, "one", 1)
    pauses = Pauses()
    follower = follower_with(source, pauses)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    assert await follower.delta(REPLY, 9, " nine") == []
    assert pauses.count == RESYNC_ATTEMPTS and len(source.reads) == RESYNC_ATTEMPTS
    assert follower.seqs[REPLY] == 1, "still where it was: the watch or the next delta repairs it"


async def test_a_gap_in_a_reply_that_ended_sends_nothing_the_finished_event_does() -> None:
    source = FakeSource()
    pauses = Pauses()
    follower = follower_with(source, pauses)
    follower.turn_started(REPLY, "<turn>")
    source.rows[REPLY] = ended(REPLY, "one two three", 3)
    assert await follower.delta(REPLY, 3, " three") == []
    assert await follower.delta(OTHER, 2, " not here") == [], "a reply the database does not have"
    assert pauses.count == 0


async def test_a_delta_of_a_reply_this_socket_never_saw_starts_from_the_snapshot() -> None:
    source = FakeSource()
    source.rows[REPLY] = streaming(REPLY, "Hello", 1)
    follower = follower_with(source)
    [frame] = await follower.delta(REPLY, 2, " world")
    assert snapshot_of(frame) == (REPLY, "Hello world")
    assert await follower.delta(REPLY, 3, "!") == [delta_frame(REPLY, "!")]


# -- Branches, continuing, finishing -------------------------------------------------------


async def test_a_branch_and_a_continued_reply_are_followed_from_their_seq() -> None:
    source = FakeSource()
    follower = follower_with(source)
    source.branch_seq = 0
    assert await follower.branch_started(REPLY) == [f"<branch {REPLY}>"]
    assert await follower.delta(REPLY, 1, "new") == [delta_frame(REPLY, "new")]
    source.continued = (7, "Stopped at the limit")
    assert await follower.continued(OTHER) == [f"<continued {OTHER}>"]
    assert await follower.delta(OTHER, 8, " and on") == [delta_frame(OTHER, " and on")]
    assert follower.renders[OTHER].text == "Stopped at the limit and on"
    assert source.reads == []


async def test_a_finished_reply_is_rendered_whole_and_forgotten() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "done")
    assert await follower.finished(REPLY) == [f"<finished {REPLY} announce=True>"]
    assert REPLY not in follower.seqs and REPLY not in follower.renders
    assert await follower.finished(REPLY, announce=False) == [f"<finished {REPLY} announce=False>"]
    # A late delta of it finds it ended in the database: nothing more is sent.
    source.rows[REPLY] = ended(REPLY, "done", 1)
    assert await follower.delta(REPLY, 2, " late") == []
    assert REPLY not in follower.seqs


# -- Joining, and the watch ------------------------------------------------------------------


async def test_joining_mid_reply_sends_snapshots_then_replaces_replies_that_ended_meanwhile() -> None:
    source = FakeSource()
    source.streaming_rows = [streaming(REPLY, "So far **so** good", 6), streaming(OTHER, "", 0)]
    source.finished_ids = ["5b0f0c1d-3333-4444-8555-b66667777888"]
    follower = follower_with(source)
    first, second, finished = await follower.joined()
    assert snapshot_of(first) == (REPLY, "So far **so** good")
    assert "<strong>so</strong>" in first, "the snapshot shows the Markdown rendered"
    assert snapshot_of(second) == (OTHER, "")
    assert finished == "<finished 5b0f0c1d-3333-4444-8555-b66667777888 announce=False>", "quietly"
    assert follower.seqs == {REPLY: 6, OTHER: 0}
    assert await follower.delta(REPLY, 7, " so far") == [delta_frame(REPLY, " so far")]


async def test_joining_a_conversation_with_nothing_streaming_sends_nothing() -> None:
    follower = follower_with(FakeSource())
    assert await follower.joined() == []
    assert follower.quiet() == []


async def test_the_watch_asks_only_about_replies_whose_deltas_stopped() -> None:
    follower = follower_with(FakeSource())
    follower.turn_started(REPLY, "<turn>")
    follower.turn_started(OTHER, "<turn>")
    await follower.delta(REPLY, 1, "live")
    assert follower.quiet() == [OTHER]
    assert follower.quiet() == [REPLY, OTHER], "no delta since the last watch: both quiet now"


async def test_catching_up_a_quiet_reply_that_finished_sends_it_finished() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    source.rows[REPLY] = ended(REPLY, "partial", 3, status="error")
    assert await follower.catch_up(REPLY) == [f"<finished {REPLY} announce=True>"]
    assert REPLY not in follower.seqs


async def test_catching_up_a_quiet_reply_the_database_has_more_of_sends_a_snapshot() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    source.rows[REPLY] = streaming(REPLY, "one two three", 3)
    [frame] = await follower.catch_up(REPLY)
    assert snapshot_of(frame) == (REPLY, "one two three")
    assert follower.seqs[REPLY] == 3
    assert await follower.delta(REPLY, 4, " four") == [delta_frame(REPLY, " four")]


async def test_catching_up_a_quiet_reply_the_database_has_no_more_of_sends_nothing() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    source.rows[REPLY] = streaming(REPLY, "one", 1)
    assert await follower.catch_up(REPLY) == []
    assert follower.renders[REPLY].text == "one"


async def test_catching_up_skips_replies_that_finished_or_moved_on_while_it_read() -> None:
    source = FakeSource()
    follower = follower_with(source)
    follower.turn_started(REPLY, "<turn>")
    await follower.delta(REPLY, 1, "one")
    source.rows[REPLY] = streaming(REPLY, "one two", 2)

    async def delta_arrives() -> None:  # handled while the watch waits for the database
        source.on_read = None
        await follower.delta(REPLY, 2, " two")

    source.on_read = delta_arrives
    assert await follower.catch_up(REPLY) == [], "the delta has it already; an older snapshot would undo it"
    assert follower.seqs[REPLY] == 2
    await follower.finished(REPLY)
    source.reads.clear()
    assert await follower.catch_up(REPLY) == []
    assert source.reads == [], "a reply no longer followed is not read"
