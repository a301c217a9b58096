"""Regenerate, the version switcher, edit, feedback and the staff transcript page, in real Chromium.

The server here runs the tiny test model with short replies, so these check the
page's behaviour (websocket swaps, htmx forms), not the model's words.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, server_env, start_server
from tests.e2e.test_chat_browser import sign_up, start_chat

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("parley-tiny")
    env = server_env(
        tmp, INFERENCE_MODEL=str(tiny_model_dir), INFERENCE_DEFAULT_MAX_TOKENS="12", CHAT_INITIAL_MESSAGES="4"
    )
    url, process = start_server(tmp, env)
    yield url, env
    process.terminate()
    process.wait(timeout=20)


def send(page, text: str) -> None:
    count = page.locator("article.msg-assistant[data-status='complete']").count()
    page.get_by_label("Message").fill(text)
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"() => document.querySelectorAll(\"article.msg-assistant[data-status='complete']\").length > {count}"
    )


def finished_replies(page):
    return page.locator("article.msg-assistant[data-status='complete']")


def test_regenerate_then_switch_between_versions_and_reload(tiny_server, page) -> None:
    url, _ = tiny_server
    sign_up(page, url)
    start_chat(page)
    send(page, "Tell me a fact")
    first_text = finished_replies(page).last.locator(".msg-text").inner_text()
    page.get_by_role("button", name="Regenerate").click()
    page.locator(".branch-position", has_text="2 / 2").wait_for()
    finished_replies(page).last.wait_for()
    page.wait_for_function("() => !document.querySelector(\"article.msg-assistant[data-status='streaming']\")")
    assert page.locator("article.msg-assistant").count() == 1, "the new version replaces the old one on screen"

    page.get_by_role("button", name="Previous version").click()
    page.locator(".branch-position", has_text="1 / 2").wait_for()
    assert finished_replies(page).last.locator(".msg-text").inner_text() == first_text
    page.reload()
    assert page.locator(".branch-position").inner_text() == "1 / 2", "the chosen version survives a reload"
    assert finished_replies(page).last.locator(".msg-text").inner_text() == first_text


def test_edit_a_message_makes_a_new_branch_and_keeps_the_original(tiny_server, page) -> None:
    url, _ = tiny_server
    sign_up(page, url)
    start_chat(page)
    send(page, "Original question")
    page.locator("article.msg-user").get_by_text("Edit", exact=True).click()
    box = page.get_by_label("Edited text")
    box.fill("Edited question")
    page.get_by_role("button", name="Submit edit").click()
    page.locator("article.msg-user", has_text="Edited question").wait_for()
    page.wait_for_function("() => !document.querySelector(\"article.msg-assistant[data-status='streaming']\")")
    assert page.locator("article.msg-user").count() == 1
    assert page.locator("article.msg-user .branch-position").inner_text() == "2 / 2"
    page.locator("article.msg-user").get_by_role("button", name="Previous version").click()
    page.locator("article.msg-user", has_text="Original question").wait_for()


def test_feedback_with_a_reason_is_kept_and_can_be_changed(tiny_server, page) -> None:
    url, _ = tiny_server
    sign_up(page, url)
    start_chat(page)
    send(page, "Say something")
    page.get_by_role("button", name="Bad reply").click()
    page.get_by_label("What was wrong? (optional)").select_option("unhelpful")
    page.get_by_label("Tell us more (optional)").fill("Too vague")
    page.get_by_role("button", name="Save feedback").click()
    page.get_by_text("Thanks, noted.").wait_for()
    page.reload()
    page.locator("body:not(.is-offline) .chat").wait_for()
    assert page.get_by_role("button", name="Bad reply").get_attribute("aria-pressed") == "true"
    assert page.get_by_label("Tell us more (optional)").input_value() == "Too vague"
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.get_by_role("button", name="Good reply").click()
    page.locator('button[title="Good reply"][aria-pressed="true"]').wait_for()
    assert page.get_by_label("What was wrong? (optional)").count() == 0


def test_staff_read_the_transcript_as_a_chat(tiny_server, page) -> None:
    url, env = tiny_server
    sign_up(page, url)
    start_chat(page)
    send(page, "A question for the reviewers")
    page.get_by_role("button", name="Bad reply").click()
    page.get_by_label("What was wrong? (optional)").wait_for()
    page.context.clear_cookies()
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "boss", "--email", "b@example.com"],
        cwd=ROOT,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": "a long admin phrase 42"},
        check=True,
    )
    page.goto(f"{url}/admin/login/")
    page.get_by_label("Username").fill("boss")
    page.get_by_label("Password").fill("a long admin phrase 42")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{url}/admin/conversations/conversation/?feedback=down")
    assert "A question for the reviewers" not in page.content(), "the list shows no user text"
    page.locator("th.field-conversation a").click()
    page.locator(".t-msg.t-user", has_text="A question for the reviewers").wait_for()
    assert page.locator(".t-msg.t-assistant .t-feedback-down").count() == 1
    page.get_by_role("link", name="inspect").click()
    page.get_by_text("Prompt after context fitting and the chat template").wait_for()
    assert "A question for the reviewers" in page.locator("pre.inspect-prompt").inner_text()


def test_older_messages_load_when_scrolling_up(tiny_server, browser) -> None:
    url, _ = tiny_server
    context = browser.new_context(viewport={"width": 900, "height": 420})
    page = context.new_page()
    page.set_default_timeout(60_000)
    sign_up(page, url)
    start_chat(page)
    for index in range(4):
        send(page, f"Message number {index}")
    page.reload()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.wait_for_function(  # the page scrolled to its end...
        "() => { const list = document.querySelector('#messages');"
        " return list.scrollHeight - list.scrollTop - list.clientHeight < 2; }"
    )
    # ...and drew twice since, so an intersection observer would have seen the sentinel.
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    sentinel = page.locator(".older-sentinel")
    assert sentinel.count() == 1 and "htmx-request" not in (sentinel.get_attribute("class") or ""), "none loading"
    assert page.locator("article.msg").count() == 4, "the conversation opens with its latest messages"
    page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    page.locator("article.msg").nth(7).wait_for(state="attached")
    page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    texts = page.locator("article.msg-user .msg-text").all_inner_texts()
    assert texts == [f"Message number {index}" for index in range(4)], "older messages come back in order"
    context.close()


def test_copy_buttons_put_the_text_on_the_clipboard(tiny_server, browser) -> None:
    url, _ = tiny_server
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    sign_up(page, url)
    start_chat(page)
    send(page, "Copy *me* exactly")
    page.locator("article.msg-user").get_by_role("button", name="Copy").click()
    page.locator("article.msg-user").get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == "Copy *me* exactly"
    # A code block as the server renders it (conversations.rendering adds the button).
    page.locator("#messages").evaluate(
        """list => list.insertAdjacentHTML('beforeend', '<div class="markdown"><div class="code-block">'
        + '<button type="button" class="code-copy" data-copy-code>Copy</button>'
        + '<pre><code><span class="k">print</span>(1)\\n</code></pre></div></div>')"""
    )
    page.locator(".code-copy").click()
    page.locator(".code-copy", has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()").strip() == "print(1)"
    context.close()
