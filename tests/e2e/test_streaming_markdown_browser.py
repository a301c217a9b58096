"""Markdown takes shape while the reply streams, in real Chromium, and payloads arriving
mid-stream never run or become markup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_xss_browser import XSS
from tests.e2e.ui import new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

MARKDOWN = (
    "## A plan\n\nHere is a list:\n\n- first **item**\n- second item\n\n| name | value |\n|---|---|\n| a | 1 |\n\n"
    "```python\nprint('streaming')\n```\n\n"
    + "And a long closing paragraph so that the reply is still streaming when the checks run. " * 6
)
STREAMING = "article.msg-assistant[data-status='streaming'] .msg-text"
# Every 50 ms while the reply streams: anything of the payloads that became markup or ran.
_WATCH = """() => {
    window.seenDuringStream = [];
    const check = () => {
        const text = document.querySelector("article.msg-assistant[data-status='streaming'] .msg-text");
        if (!text) return;
        const bad = text.querySelectorAll("script, iframe, svg, img, style, form, details, [onerror], [onload], [hx-get], a[href^='javascript']");
        window.seenDuringStream.push(bad.length + (window.__pwned ? 1000 : 0));
    };
    window.streamWatch = setInterval(check, 50);
}"""


def serve(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> Iterator[tuple[str, dict[str, str]]]:
    yield from synthetic_server(tmp_path_factory.mktemp(name), text=text, tokens_per_second=30)


@pytest.fixture(scope="module")
def markdown_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from serve(tmp_path_factory, "stream-md", MARKDOWN)


@pytest.fixture(scope="module")
def xss_stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from serve(tmp_path_factory, "stream-xss", XSS)


def ask(page, url: str) -> None:
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.get_by_label("Message").fill("Go on")
    page.keyboard.press("Enter")


def test_lists_tables_headings_and_code_take_shape_while_streaming(markdown_server, page) -> None:
    url, _ = markdown_server
    ask(page, url)
    for shape in ("h2", "li strong", "table td", "pre code"):
        page.locator(f"{STREAMING} {shape}").first.wait_for()  # matches only while the reply streams
    assert page.locator(f"{STREAMING} li").count() == 2
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    final = page.locator("article.msg-assistant .msg-text")
    assert final.locator("table").count() == 1 and final.locator("li").count() == 2 and final.locator("h2").count() == 1


def test_payloads_mid_stream_stay_text(xss_stream_server, page) -> None:
    url, _ = xss_stream_server
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.evaluate(_WATCH)
    page.get_by_label("Message").fill("Show me the payloads")
    page.keyboard.press("Enter")
    page.locator(f"{STREAMING} code").first.wait_for()  # the fenced payload is shown as code mid-stream
    page.locator("article.msg-assistant[data-status='complete']").wait_for(timeout=60_000)
    seen = page.evaluate("() => { clearInterval(window.streamWatch); return window.seenDuringStream; }")
    assert len(seen) > 20, "the watch ran through the stream"
    assert set(seen) == {0}, "no payload became markup or ran while streaming"
    assert dialogs == [] and page.evaluate("() => window.__pwned") is None
    assert "window.__pwned='script'" in page.locator("article.msg-assistant .msg-text").inner_text()
