"""Markdown while a reply streams, without sending the whole reply again on every token.

A reply's text is a run of Markdown blocks. Every block but the last is finished: nothing
the model writes later can change it (it is separated from what follows), so it is
rendered once and appended to the page. The last block, the tail, is still growing: it is
rendered again when a block closes, or at most every ``CHAT_STREAM_RENDER_INTERVAL_MS``
once text that Markdown would change has come (``MARKUP``: plain words look the same
raw as rendered), and in between each token's text is appended, escaped, to a pending
span at the end of the tail's last line. Two things keep a long tail from being sent
again and again: an open code block is not rendered again until it closes (its raw text
is its rendering, highlighting aside), and a tail of N bytes waits at least
N / ``TAIL_BYTES_PER_SECOND`` seconds between renders. Every piece is rendered and sanitized by
``conversations.rendering.render_markdown``, the function and allow-list that render a
finished reply, which replaces all of this when the reply ends.

The streaming text on the page::

    <div id="m-ID-text" class="msg-text markdown is-streaming">
      <div id="m-ID-done">finished blocks</div>
      <div id="m-ID-tail">the last block ... <span id="m-ID-pending">raw text</span></div>
    </div>

Each token still arrives as a delta (appended to the pending span), and a frame that
re-renders the tail carries it too, so a client that only reads deltas and snapshots
(tests, bench.client) rebuilds the exact text; a snapshot also carries the source text in
an inert ``<template>``.
"""

from __future__ import annotations

import re
import time

from django.conf import settings
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from conversations.rendering import markdown_parser, render_markdown

# The last line of a block to continue: the closing tag of a paragraph, list item, heading,
# table cell or code, and any container tags closing after it.
_LAST_LINE = re.compile(r"(</(?:p|li|h[1-6]|td|th|code)>)((?:\s*</(?:ul|ol|pre|div|blockquote|table|tbody|tr)>)*\s*)$")
THINKING = '<p><span class="stream-thinking">Thinking…</span>{pending}</p>'
TAIL_BYTES_PER_SECOND = 8_000
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n", re.S)
# Characters after which the raw text may differ from its rendering (emphasis, code, links,
# tables, headings, math, escapes, entities, autolinks, new lines).
MARKUP = frozenset("*_`~[]()#|$\\&<\n")


def finished_length(text: str) -> int:
    """How many leading characters of ``text`` make up finished blocks: everything before
    the start of its last top-level block (0 with fewer than two blocks)."""
    starts = [token.map[0] for token in markdown_parser().parse(text) if token.level == 0 and token.map and token.nesting >= 0]
    if len(starts) < 2:
        return 0
    lines = text.splitlines(keepends=True)
    return sum(len(line) for line in lines[: starts[-1]])


def in_open_fence(tail: str) -> bool:
    """Whether ``tail`` is a fenced code block whose opening line is complete and which has
    not closed yet: text appended to it shows as it will be rendered."""
    opening = _FENCE_OPEN.match(tail.lstrip("\n"))
    if opening is None:
        return False
    fence = opening.group(1)
    body = tail.lstrip("\n")[opening.end() :]
    return not re.search(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", body, re.M)


def pending_span(message_id: str) -> str:
    return f'<span id="m-{message_id}-pending" class="stream-pending"></span>'


def tail_html(message_id: str, tail: str) -> str:
    """The rendered tail with the pending span where its last line ends."""
    pending = pending_span(message_id)
    rendered = render_markdown(tail).rstrip() if tail.strip() else ""
    if not rendered:
        return THINKING.format(pending=pending) if not tail else f"<p>{pending}</p>"
    match = _LAST_LINE.search(rendered)
    if match is None:
        return rendered + pending
    at = match.start()
    if match.group(1) == "</code>" and rendered[:at].endswith("\n") and not tail.endswith("\n"):
        at -= 1  # a code block's renderer ends its unfinished last line with a newline
    return rendered[:at] + pending + rendered[at:]


class StreamRender:
    """One streaming reply's Markdown as one socket has sent it."""

    def __init__(self, message_id: str, text: str = "") -> None:
        self.message_id = message_id
        self.text = text
        self.done = finished_length(text)
        self.rendered_at = time.monotonic()
        self.marked = False  # markup arrived since the tail was last rendered
        self.tail_bytes = 0  # the size of the tail as last rendered
        self.fenced = False  # the last render showed the tail as an open code block

    def body(self) -> str:
        """The inside of the reply's text element: finished blocks, then the tail."""
        done = render_markdown(self.text[: self.done]) if self.done else ""
        tail = tail_html(self.message_id, self.text[self.done :])
        return f'<div id="m-{self.message_id}-done">{done}</div><div id="m-{self.message_id}-tail">{tail}</div>'

    def feed(self, delta: str, now: float | None = None) -> str:
        """The frame for one delta: its text for the pending span; with it, when a block
        closed or the tail is due, the newly finished blocks and the tail rendered again."""
        now = time.monotonic() if now is None else now
        self.text += delta
        frame = format_html('<span hx-swap-oob="beforeend:#m-{}-pending">{}</span>', self.message_id, delta)
        closed = finished_length(self.text[self.done :]) if self.may_close(delta) else 0
        self.marked = self.marked or not MARKUP.isdisjoint(delta)
        if not closed and not self.due(now):
            return frame
        parts: list[str] = [frame]
        if closed:
            finished = render_markdown(self.text[self.done : self.done + closed])
            parts.append(f'<div hx-swap-oob="beforeend:#m-{self.message_id}-done">{finished}</div>')
            self.done += closed
        tail = tail_html(self.message_id, self.text[self.done :])
        parts.append(f'<div id="m-{self.message_id}-tail" hx-swap-oob="true">{tail}</div>')
        self.rendered_at, self.marked, self.tail_bytes = now, False, len(tail)
        self.fenced = in_open_fence(self.text[self.done :])
        return "".join(parts)

    def may_close(self, delta: str) -> bool:
        """Whether ``delta`` may have begun a new block (closing the one before): blocks begin
        on a new line, and show what they are within its first few characters. A closing
        missed here is found at the next line; this only spares parsing mid-line."""
        return "\n" in delta or len(self.text) - self.text.rfind("\n") <= 9

    def due(self, now: float) -> bool:
        """Whether the tail should be rendered again now (no block closed)."""
        if not self.marked or (self.fenced and in_open_fence(self.text[self.done :])):
            return False
        wait = max(settings.CHAT_STREAM_RENDER_INTERVAL_MS / 1000, self.tail_bytes / TAIL_BYTES_PER_SECOND)
        return now - self.rendered_at >= wait

    def snapshot(self) -> str:
        """The whole streaming text, replacing what the page has (joining or catching up)."""
        return (
            f'<div id="m-{self.message_id}-text" class="msg-text markdown is-streaming" hx-swap-oob="true">'
            f'{self.body()}<template class="stream-source">{escape(self.text)}</template></div>'
        )


def streaming_body(message_id: str, text: str) -> SafeString:
    """For the page: a streaming reply's text as the socket would have built it."""
    return mark_safe(StreamRender(message_id, text).body())  # noqa: S308 - rendered by render_markdown, ids are UUIDs
