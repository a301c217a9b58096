"""Markdown while a reply streams (conversations/streaming.py): finished blocks are rendered and
sent once, the last block is rendered again as it grows, what a page builds from the frames
is the finished reply's rendering, and every frame passes the finished replies' sanitizer,
also when an XSS payload arrives a few characters at a time."""

from __future__ import annotations

import random
import re

import pytest

from conversations.rendering import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, MATHML_TAGS, render_markdown
from conversations.streaming import TAIL_BYTES_PER_SECOND, StreamRender
from tests.e2e.test_xss_browser import XSS

MESSAGE_ID = "0c5e4f5e-1111-4222-8333-944445555666"
MARKDOWN = (
    "## Plan\n\nFirst, a list:\n\n- one\n- **two**\n- three\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "```python\nprint('hi')\n\nprint('there')\n```\n\n> quoted\n\nThe area is $\\pi r^2$.\n"
)
# Our own markup around the rendered pieces: where they go on the page.
FRAME_TAGS = {"div", "span", "button", "template"}
FRAME_ATTRIBUTES = {"id", "class", "hx-swap-oob", "type", "data-copy-code"}


def pieces(text: str, seed: int) -> list[str]:
    rng, out, index = random.Random(seed), [], 0
    while index < len(text):
        size = rng.randint(1, 7)
        out.append(text[index : index + size])
        index += size
    return out


class Page:
    """Applies the frames as htmx would, for the parts of a streaming reply."""

    def __init__(self, body: str) -> None:
        self.done = re.search(r'-done">(.*?)</div><div id="m-[^"]+-tail">', body, re.S).group(1)
        self.tail = body.split('-tail">', 1)[1].rsplit("</div>", 1)[0]

    def apply(self, frame: str) -> None:
        for html in re.findall(r'<div hx-swap-oob="beforeend:#m-[^"]+-done">(.*?)</div>(?=<div id=)', frame, re.S):
            self.done += html
        tail = re.search(r'<div id="m-[^"]+-tail" hx-swap-oob="true">(.*)</div>$', frame, re.S)
        if tail:
            self.tail = tail.group(1)
        else:
            text = re.match(r'<span hx-swap-oob="beforeend:#m-[^"]+-pending">(.*?)</span>$', frame, re.S).group(1)
            self.tail = self.tail.replace("</span>", text + "</span>", 1) if "stream-pending" in self.tail else self.tail

    def shown(self) -> str:
        return self.done + re.sub(r'<span id="m-[^"]+-pending" class="stream-pending">(.*?)</span>', r"\1", self.tail)


def test_finished_blocks_are_sent_once_and_only_the_last_is_sent_again(settings) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 60_000  # only a closing block renders
    render = StreamRender(MESSAGE_ID)
    frames = [render.feed(piece, now=0.0) for piece in pieces(MARKDOWN, seed=1)]
    appended = "".join(re.findall(r'beforeend:#m-[^"]+-done">(.*?)</div><div id=', "".join(frames), re.S))
    assert appended.count("<h2>Plan</h2>") == 1 and appended.count("<table>") == 1 and appended.count("<li>") == 3
    tails = [frame for frame in frames if '-tail" hx-swap-oob="true"' in frame]
    assert 5 <= len(tails) <= 8, "the tail is rendered again when a block closes, not on every token"
    assert all("Plan" not in tail.split('-tail" hx-swap-oob')[1] for tail in tails[1:]), "a finished block is never resent"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_page_builds_the_finished_rendering(settings, seed: int) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 0
    render = StreamRender(MESSAGE_ID)
    page = Page(render.body())
    for second, piece in enumerate(pieces(MARKDOWN, seed)):  # a piece a second: every render is due
        page.apply(render.feed(piece, now=float(second + 1)))
    assert page.shown().replace("\n", "") == render_markdown(MARKDOWN).replace("\n", "")


def test_a_joining_page_gets_the_same_as_one_that_followed(settings) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 0
    followed = StreamRender(MESSAGE_ID)
    for second, piece in enumerate(pieces(MARKDOWN[:150], seed=4)):
        followed.feed(piece, now=float(second + 1))
    joined = StreamRender(MESSAGE_ID, MARKDOWN[:150])
    assert joined.body() == followed.body()
    assert '<template class="stream-source">' in joined.snapshot()


def check_frame(frame: str) -> None:
    tags = set(re.findall(r"<([a-zA-Z][\w-]*)", frame))
    assert tags <= ALLOWED_TAGS | MATHML_TAGS | FRAME_TAGS, tags - ALLOWED_TAGS - MATHML_TAGS - FRAME_TAGS
    for tag, attributes in re.findall(r"<([a-zA-Z][\w-]*)((?:\s[^>]*)?)>", frame):
        names = set(re.findall(r"\s([\w-]+)=", attributes))
        allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | (FRAME_ATTRIBUTES if tag in FRAME_TAGS else set())
        assert names <= allowed, (tag, names - allowed)
        assert "javascript" not in attributes.lower()


@pytest.mark.parametrize("seed", range(5))
def test_xss_payloads_arriving_a_few_characters_at_a_time_stay_text(settings, seed: int) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 0  # render after every piece: every cut is checked
    render = StreamRender(MESSAGE_ID)
    for second, piece in enumerate(pieces(XSS, seed)):
        check_frame(render.feed(piece, now=float(second + 1)))
    check_frame(render.snapshot())
    assert "&lt;script&gt;window.__pwned" in render.snapshot()


def test_an_open_code_block_is_not_sent_again_until_it_closes(settings) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 0
    render = StreamRender(MESSAGE_ID)
    code = "```python\n" + "".join(f"values[{n}] = compute({n}) * 2\n" for n in range(40)) + "```\n\nDone."
    frames = [render.feed(piece, now=float(second + 1)) for second, piece in enumerate(pieces(code, seed=5))]
    tails = [frame for frame in frames if 'hx-swap-oob="true">' in frame]
    assert len(tails) <= 4, "rendered when the fence opens and when it closes, not for every line"
    rendered = sum(len(re.sub(r'^<span hx-swap-oob="beforeend:[^"]+">.*?</span>', "", frame, flags=re.S)) for frame in frames)
    assert rendered < 2 * len(render_markdown(code)), "the block's rendering is sent about once"


def test_a_long_tail_is_rendered_less_often(settings) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 0
    render = StreamRender(MESSAGE_ID)
    items = "".join(f"- item **{n}** of a long list that keeps growing\n" for n in range(60))
    frames = [render.feed(piece, now=second * 0.05) for second, piece in enumerate(pieces(items, seed=6))]
    tail_bytes = sum(len(frame.split('-tail" hx-swap-oob="true">', 1)[1]) for frame in frames if '-tail" hx-swap-oob' in frame)
    seconds = len(frames) * 0.05
    assert tail_bytes / seconds < 2 * TAIL_BYTES_PER_SECOND, "re-rendering a growing list is capped in bytes a second"


def test_a_display_formula_is_never_split_into_finished_paragraphs(settings) -> None:
    settings.CHAT_STREAM_RENDER_INTERVAL_MS = 0
    text = "Before.\n\n$$\nx = 1\n$$\n\nAfter."
    render = StreamRender(MESSAGE_ID)
    page = Page(render.body())
    for second, piece in enumerate(pieces(text, seed=7)):
        page.apply(render.feed(piece, now=float(second + 1)))
    assert page.shown().replace("\n", "") == render_markdown(text).replace("\n", "")
    assert page.shown().count("<math") == 1


def test_raw_text_continues_an_unfinished_line_of_code_on_the_same_line() -> None:
    tail = StreamRender(MESSAGE_ID, "```python\ndef bake(loaves: int,").body()
    assert re.search(r'int</span><span class="p">,</span><span id="m-[^"]+-pending"', tail), tail
    finished_line = StreamRender(MESSAGE_ID, "```python\nx = 1\n").body()
    assert re.search(r'\n<span id="m-[^"]+-pending"', finished_line), "after a finished line, raw text starts a new one"
