"""Under each reply, in real Chromium: time to first token, tokens per second and the model;
a reply cut at its token limit offers Continue, which goes on writing in the same message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.ui import new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

TEXT = "A fox ran through the quiet wood at dawn, looking for breakfast. "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from synthetic_server(tmp_path_factory.mktemp("stats"), text=TEXT, tokens_per_second=60)


def test_a_reply_shows_its_numbers_and_continues_where_it_stopped(server, page) -> None:
    url, _ = server
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.get_by_label("Message").fill("Tell me about the fox")
    page.keyboard.press("Enter")
    reply = page.locator("article.msg-assistant[data-status='complete']")
    reply.wait_for()
    stats = reply.locator(".reply-stats")
    assert stats.locator(".reply-first-token").inner_text().endswith("s to first token")
    assert float(stats.locator(".reply-speed").inner_text().split()[0]) > 0
    assert "smollm2-135m-instruct" in stats.inner_text(), "the model that wrote it"
    first_text = reply.locator(".msg-text").inner_text().strip()
    assert reply.get_by_text("The reply reached its token limit.").is_visible()
    message_id = reply.get_attribute("id")

    reply.get_by_role("button", name="Continue").click()
    page.locator(f"#{message_id}[data-status='streaming']").wait_for()
    page.locator(f"#{message_id}[data-status='complete']").wait_for()
    assert page.locator("article.msg-assistant").count() == 1, "the same message went on"
    continued = page.locator(f"#{message_id} .msg-text").inner_text().strip()
    assert continued.startswith(first_text) and len(continued) > len(first_text) + 20
    page.reload()
    assert page.locator(f"#{message_id} .msg-text").inner_text().strip() == continued
