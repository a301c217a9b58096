"""Keeping conversations and the account, in real Chromium: a new chat is stored with its first
message (a starter prompt will do), pins lead the sidebar, older chats load as the sidebar
scrolls, and a password can be changed, or reset through the link the console email backend
writes to the server's log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conversations.starters import STARTERS
from tests.e2e.ui import manage_shell, new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

PASSWORD = "a long pass phrase 42"
MANY_CHATS = """
from django.contrib.auth.models import User
from conversations import services
owner = User.objects.get(username="{name}")
for number in range(45):
    chat = services.conversation_create(owner=owner)
    services.conversation_rename(conversation=chat, title=f"Old chat {{number:02d}}")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    tmp = tmp_path_factory.mktemp("conversations-list")
    for url, env in synthetic_server(tmp, text="Sure, here you are.", tokens_per_second=80, CHAT_SIDEBAR_PAGE_SIZE="10"):
        yield url, env, tmp / "server.log"


def log_in(page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_a_new_chat_is_stored_with_its_first_message_and_pins_lead(server, page) -> None:
    url, _, _ = server
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_url("**/c/new/")
    page.get_by_role("button", name="+ New chat").click()
    page.wait_for_url("**/c/new/")
    assert page.locator(".conversation-item").count() == 0, "opening New chat twice stored nothing"
    assert page.get_by_text("No conversations yet.").is_visible()

    page.get_by_role("button", name=STARTERS[0].prompt).click()
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    first_url = page.url
    assert page.locator(".conversation-item").count() == 1
    assert page.locator("#chat-title").inner_text().startswith("Explain how a rainbow")

    page.get_by_role("button", name="+ New chat").click()
    page.wait_for_url("**/c/new/")
    page.get_by_label("Message").fill("A second chat")
    page.keyboard.press("Enter")
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    page.reload()  # the chat's own address now
    assert page.locator("article.msg-user .msg-text").inner_text().strip() == "A second chat"
    assert page.locator(".conversation-item").first.inner_text().strip() == "A second chat"

    page.goto(first_url)
    page.get_by_role("button", name="Pin").click()
    page.get_by_role("button", name="Unpin").wait_for()
    assert page.locator("#pinned-conversations .conversation-item").inner_text().strip().endswith("Explain how a rainbow forms, in three sentences.")
    page.goto(f"{url}/")
    items = page.locator(".conversation-item")
    assert "rainbow" in items.first.inner_text(), "the pinned chat leads, though the other is newer"


def test_older_chats_load_as_the_sidebar_scrolls(server, page) -> None:
    url, env, _ = server
    name = new_user(page, url)
    manage_shell(env, MANY_CHATS.format(name=name))
    first_page = page.context.request.get(f"{url}/").text()
    assert first_page.count('<a id="conv-') == 10, "one page at first"
    assert "sidebar-sentinel" in first_page
    page.goto(f"{url}/")
    items = page.locator(".conversation-item")
    for _ in range(10):
        shown = items.count()
        if shown == 45:
            break
        page.locator("#conversation-list").evaluate("nav => nav.scrollTop = nav.scrollHeight")
        page.wait_for_function(f"() => document.querySelectorAll('.conversation-item').length > {shown}")
    titles = [title.strip() for title in items.all_inner_texts()]
    assert titles == [f"Old chat {number:02d}" for number in reversed(range(45))], "all, newest first, once each"
    assert page.locator(".sidebar-sentinel").count() == 0


def test_change_password_then_reset_it_by_email(server, page) -> None:
    url, _, log = server
    name = new_user(page, url)
    page.goto(f"{url}/settings/")
    page.get_by_label("Email").fill(f"{name}@example.com")
    page.get_by_role("button", name="Save email").click()
    page.get_by_text("Saved.").wait_for()
    page.get_by_role("link", name="Change your password").click()
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("changed pass phrase 77")
    page.get_by_label("New password confirmation").fill("changed pass phrase 77")
    page.get_by_role("button", name="Change password").click()
    page.get_by_text("Your password was changed.").wait_for()

    page.context.clear_cookies()
    log_in(page, url, name, "changed pass phrase 77")
    page.locator(".app").wait_for()

    page.context.clear_cookies()
    page.goto(f"{url}/accounts/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill(f"{name}@example.com")
    page.get_by_role("button", name="Send the link").click()
    page.get_by_text("Check your email").wait_for()
    written = log.read_text()
    link = re.findall(r"http://127\.0\.0\.1:\d+/accounts/reset/\S+/", written)[-1]
    assert f"Hello {name}," in written
    page.goto(link)
    page.get_by_label("New password", exact=True).fill("reset pass phrase 88")
    page.get_by_label("New password confirmation").fill("reset pass phrase 88")
    page.get_by_role("button", name="Set password").click()
    page.get_by_text("Your new password is ready.").wait_for()
    log_in(page, url, name, "reset pass phrase 88")
    page.locator(".app").wait_for()
