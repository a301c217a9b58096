"""Model output and user text never run script in the page, while streaming or after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import server_env, start_server
from tests.e2e.test_chat_browser import sign_up, start_chat

pytestmark = [pytest.mark.e2e]

PAYLOADS = [
    "<script>window.__pwned='script'</script>",
    "<img src=x onerror=\"window.__pwned='img'\">",
    "<svg onload=\"window.__pwned='svg'\"></svg>",
    "[click](javascript:window.__pwned='link')",
    "<a href=\"javascript:window.__pwned='href'\">x</a>",
    "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
    "```html\n<script>window.__pwned='code'</script>\n```",
    "<details open ontoggle=\"window.__pwned='details'\">",
    "<style>body{display:none}</style>",
    '<div hx-get="/admin/" hx-trigger="load" hx-target="body">htmx</div>',
    '<form action="https://evil.example"><button>go</button></form>',
]
XSS = "\n\n".join(PAYLOADS)


@pytest.fixture(scope="module")
def xss_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("xss-server")
    env = server_env(
        tmp,
        INFERENCE_BACKEND="synthetic",
        INFERENCE_SYNTHETIC_TEXT=XSS,
        INFERENCE_SYNTHETIC_TOKENS_PER_SECOND="60",
    )
    url, process = start_server(tmp, env)
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_a_reply_full_of_payloads_runs_nothing(xss_server, page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_up(page, xss_server)
    start_chat(page)
    page.locator("#settings-form").evaluate("form => form.closest('details').open = true")
    page.get_by_label("Max reply tokens").fill(str(len(XSS) // 5 + 1))
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Saved.").wait_for()
    page.get_by_label("Message").fill(XSS)
    page.get_by_role("button", name="Send").click()
    page.locator("article.msg-assistant[data-status='streaming']").wait_for()
    assert page.evaluate("() => window.__pwned") is None, "nothing ran while the reply streamed"
    page.locator("article.msg-assistant[data-status='complete']").wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    for view in ("after streaming", "after reload"):
        assert page.evaluate("() => window.__pwned") is None, f"nothing ran {view}"
        assert dialogs == []
        text = "article.msg .msg-text"  # what users and the model wrote (icons elsewhere are ours)
        assert page.locator(f"{text} script, {text} iframe, {text} svg, {text} [onerror], {text} style").count() == 0
        assert page.locator(f"{text} a[href^='javascript']").count() == 0
        assert page.locator(f"{text} [hx-get]").count() == 0, "model output cannot carry htmx attributes"
        assert page.locator("body").is_visible()
        reply = page.locator("article.msg-assistant .msg-text").last.inner_text()
        assert "window.__pwned='script'" in reply, "the payload is shown as text"
        page.reload()
        page.locator("article.msg-assistant[data-status='complete']").wait_for()
    user_text = page.locator("article.msg-user .msg-text").first.inner_text()
    assert "<script>window.__pwned='script'</script>" in user_text
