"""The chat by keyboard and screen reader, in real Chromium: Esc stops a reply, Ctrl+Shift+O
opens a new chat, focus returns to the composer after sending, the mobile menu is a real
button, and a reply's state is announced once (a status region, aria-busy while it streams)
instead of every token through an aria-live message list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.ui import new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

LONG = "The reply goes on and on so that there is time to stop it. " * 40

# Counts the changes of the status region's text, and of the message list's aria-live.
_WATCH_STATUS = """() => {
    window.statusTexts = [];
    const region = document.querySelector('#chat-status');
    new MutationObserver(() => window.statusTexts.push(region.textContent.trim()))
        .observe(region, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from synthetic_server(tmp_path_factory.mktemp("keyboard"), text=LONG, tokens_per_second=15)


def open_chat(page, url: str) -> None:
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_url("**/c/*/")
    page.wait_for_load_state()  # chat.js has run and put focus in the composer
    page.locator("body:not(.is-offline) .chat").wait_for()


def test_esc_stops_the_reply_and_its_state_is_announced_once(server, page) -> None:
    url, _ = server
    open_chat(page, url)
    assert page.locator("#messages").get_attribute("aria-live") is None, "tokens are not read out one by one"
    page.evaluate(_WATCH_STATUS)
    page.get_by_label("Message").fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    reply = page.locator("article.msg-assistant").last
    page.wait_for_function(
        "() => { const m = document.querySelector('article.msg-assistant');"
        " return m && m.querySelector('.msg-text').innerText.length > 80; }"
    )
    assert reply.get_attribute("aria-busy") == "true"
    assert page.evaluate("() => document.activeElement.id") == "composer-input", "focus is back in the composer"
    assert page.get_by_role("status").filter(has_text="writing a reply").count() == 1

    page.keyboard.press("Escape")
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    assert reply.get_by_text("Stopped.").is_visible()
    assert reply.get_attribute("aria-busy") is None
    texts = page.evaluate("() => window.statusTexts")
    assert [t for t in texts if t] == ["Parley is writing a reply.", "Reply stopped."], texts
    page.get_by_role("button", name="Send").wait_for()


def test_escape_with_nothing_streaming_stops_nothing(server, page) -> None:
    url, _ = server
    open_chat(page, url)
    page.get_by_label("Message").press("Escape")
    assert page.locator("#composer-error").inner_text() == ""
    assert page.locator("article.msg").count() == 0


def test_a_shortcut_opens_a_new_chat(server, page) -> None:
    url, _ = server
    open_chat(page, url)
    page.get_by_label("Message").fill("First chat")
    page.keyboard.press("Enter")
    page.locator("article.msg-assistant").wait_for()
    page.keyboard.press("Escape")
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    first = page.url
    page.keyboard.press("Control+Shift+O")
    page.wait_for_function(f"() => location.href !== {first!r}")
    page.locator("body:not(.is-offline) .chat").wait_for()
    assert page.locator("article.msg").count() == 0
    assert page.evaluate("() => document.activeElement.id") == "composer-input"


def test_the_mobile_menu_is_a_button_that_works_from_the_keyboard(server, browser) -> None:
    url, _ = server
    context = browser.new_context(viewport={"width": 390, "height": 800}, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    open_chat(page, url)
    menu = page.get_by_role("button", name="Conversations")
    sidebar = page.locator("#sidebar")
    assert not sidebar.is_visible(), "closed, the sidebar is out of the way and out of the tab order"
    assert menu.get_attribute("aria-expanded") == "false"
    menu.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#sidebar').contains(document.activeElement)")
    assert menu.get_attribute("aria-expanded") == "true"
    page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")  # slid in
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.body.classList.contains('nav-open')")
    assert page.evaluate("() => document.activeElement.dataset.navOpen") == "", "focus returns to the menu button"
    assert menu.get_attribute("aria-expanded") == "false"
    menu.click()
    page.get_by_role("button", name="Close menu").click()
    page.wait_for_function("() => !document.body.classList.contains('nav-open')")
    context.close()
