"""A newcomer's first chat in real Chromium, on the real bundled model."""

from __future__ import annotations

import itertools
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_names = itertools.count()


def sign_up(page, base_url: str) -> None:
    page.goto(f"{base_url}/accounts/signup/")
    page.get_by_label("Username").fill(f"newcomer{next(_names)}{int(time.time())}")
    page.get_by_label("Password", exact=True).fill("a long pass phrase 42")
    page.get_by_label("Password confirmation").fill("a long pass phrase 42")
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("button", name="Start a new chat").wait_for()


def start_chat(page) -> None:
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_url("**/c/*/")
    page.locator("body:not(.is-offline) .chat").wait_for()


def reply_locator(page):
    return page.locator("article.msg-assistant").last


# Records, in the page, the length of the streaming reply's text after every change to
# the message list. An observer sees each token the socket delivers, however fast the
# engine is; polling from the test would miss most of a short, quick reply.
_RECORD_GROWTH = """() => {
    window.parleyGrowth = [];
    const list = document.querySelector('#messages');
    new MutationObserver(() => {
        const reply = [...list.querySelectorAll('article.msg-assistant')].pop();
        if (reply && reply.dataset.status === 'streaming') {
            window.parleyGrowth.push(reply.querySelector('.msg-text').innerText.length);
        }
    }).observe(list, {childList: true, subtree: true, characterData: true, attributes: true});
}"""


def test_sign_up_chat_watch_it_stream_and_find_it_after_reload(parley_server, page) -> None:
    sign_up(page, parley_server)
    start_chat(page)
    page.evaluate(_RECORD_GROWTH)
    page.get_by_label("Message").fill("Write three sentences about the sea.")
    page.keyboard.press("Enter")
    page.locator("article.msg-user").filter(has_text="Write three sentences about the sea.").wait_for()
    page.locator("article.msg-assistant[data-status='complete']").wait_for(timeout=120_000)
    lengths = page.evaluate("() => window.parleyGrowth")
    grown = sorted(set(length for length in lengths if length > 0))
    assert len(grown) >= 3, f"the reply should grow in several steps while streaming, saw {lengths}"
    final_text = reply_locator(page).locator(".msg-text").inner_text()
    assert len(final_text) > 20
    assert page.locator("#chat-title").inner_text().startswith("Write three sentences")
    assert page.get_by_label("Message").input_value() == "", "the composer is cleared after sending"

    page.reload()
    kept = reply_locator(page)
    assert kept.get_attribute("data-status") == "complete"
    assert kept.locator(".msg-text").inner_text() == final_text
    assert page.locator(".conversation-item").first.inner_text().startswith("Write three sentences")


def test_shift_enter_adds_a_line_and_empty_messages_are_refused(parley_server, page) -> None:
    sign_up(page, parley_server)
    start_chat(page)
    box = page.get_by_label("Message")
    box.fill("   ")
    page.get_by_role("button", name="Send").click()
    page.get_by_role("alert").filter(has_text="Type a message before sending.").wait_for()
    box.fill("line one")
    box.press("Shift+Enter")
    box.type("line two")
    assert box.input_value() == "line one\nline two"
    assert page.locator("article.msg").count() == 0


def test_stop_mid_reply_keeps_the_partial_reply(parley_server, page) -> None:
    sign_up(page, parley_server)
    start_chat(page)
    page.get_by_label("Message").fill("Write a very long story about a dragon who learns to bake bread.")
    page.get_by_role("button", name="Send").click()
    stop = page.get_by_role("button", name="Stop")
    stop.wait_for()
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('article.msg-assistant')].pop();"
        " return m && m.querySelector('.msg-text').innerText.length > 40; }",
        timeout=90_000,
    )
    stop.click()
    page.locator("article.msg-assistant[data-status='complete']").wait_for(timeout=30_000)
    reply = reply_locator(page)
    partial = reply.locator(".msg-text").inner_text()
    assert len(partial) > 40
    assert reply.get_by_text("Stopped.").is_visible()
    page.get_by_role("button", name="Send").wait_for()

    page.reload()
    reply = reply_locator(page)
    assert reply.get_by_text("Stopped.").is_visible()
    assert reply.locator(".msg-text").inner_text() == partial


def test_conversations_open_from_the_sidebar_and_keep_their_own_stream(parley_server, page) -> None:
    sign_up(page, parley_server)
    start_chat(page)
    page.get_by_label("Message").fill("Say hello.")
    page.keyboard.press("Enter")
    page.locator("article.msg-assistant[data-status='complete']").wait_for(timeout=120_000)
    first_url = page.url  # the chat's own address since its first message stored it
    page.get_by_role("button", name="+ New chat").click()
    page.wait_for_url("**/c/new/")
    page.locator("body:not(.is-offline) .chat").wait_for()
    assert page.locator("article.msg").count() == 0, "a new chat shows none of the other's messages"
    page.get_by_label("Message").fill("Say goodbye.")
    page.keyboard.press("Enter")
    page.locator("article.msg-user").filter(has_text="Say goodbye.").wait_for()
    page.locator("article.msg-assistant[data-status='complete']").wait_for(timeout=120_000)
    assert page.locator("article.msg-user").count() == 1
    second_url = page.url
    assert second_url != first_url

    page.locator(".conversation-item").last.click()  # the older chat, opened by htmx
    page.wait_for_url(first_url)
    page.locator("body:not(.is-offline) .chat").wait_for()
    assert page.locator("article.msg-user").count() == 1, "the first chat shows only its own messages"
    assert page.locator("article.msg-user .msg-text").inner_text().strip() == "Say hello."

    page.goto(second_url)
    assert page.locator("article.msg-user").count() == 1
    assert page.locator("article.msg-user .msg-text").inner_text().strip() == "Say goodbye."
