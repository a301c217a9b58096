"""The page reconnects its websocket by itself after a drop and catches up: no text
duplicated or missing. The web process is restarted mid-reply while a generation
worker keeps writing it."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.test_chat_browser import sign_up
from tests.scaleout.cluster import Cluster

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERENCE_BACKEND": "synthetic", "INFERENCE_SYNTHETIC_TOKENS_PER_SECOND": "8"}


def test_the_page_reconnects_and_catches_up_without_gaps_or_repeats(cluster: Cluster, page) -> None:
    base = cluster.url("web0")
    sign_up(page, base)
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_url("**/c/*/")
    page.locator("#settings-form").evaluate("form => form.closest('details').open = true")
    page.get_by_label("Model").select_option("tiny-llama")
    page.get_by_label("Max reply tokens").fill("80")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Saved.").wait_for()
    page.get_by_label("Message").fill("Talk for a while.")
    page.keyboard.press("Enter")
    reply = page.locator("article.msg-assistant").last
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('article.msg-assistant')].pop();"
        " return m && m.innerText.length > 30; }"
    )
    message_id = reply.get_attribute("id").removeprefix("m-")

    cluster.kill("web0", signal.SIGKILL)  # the connection drops as in a network failure
    page.wait_for_function("() => document.body.classList.contains('is-offline')", timeout=10_000)
    seen_offline = reply.locator(".msg-text").inner_text()
    page.wait_for_timeout(1500)
    cluster.start_web("web0")

    page.wait_for_function("() => !document.body.classList.contains('is-offline')", timeout=60_000)
    page.locator(f"#m-{message_id}[data-status='complete']").wait_for(timeout=60_000)
    shown = page.locator(f"#m-{message_id} .msg-text").inner_text()
    _, status, content, _ = cluster.reply(message_id)
    assert status == "length" and len(content.split()) == 80
    assert shown.split() == content.split(), "the page shows the whole reply exactly once"
    assert len(seen_offline) < len(shown), "text written while the page was offline arrived after reconnecting"
