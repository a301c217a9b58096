"""Attachments in real Chromium: pick or drop text files on the composer, see them as chips,
send them with a message and open them from it; a binary file gets a clear refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.ui import new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

NOTES = "Meeting notes\nThe launch moves to Friday.\n"
# Drops a file on the composer as a person dragging it from their desktop would.
_DROP = """([name, text]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([text], name, {type: "text/csv"}));
    const composer = document.querySelector("#composer");
    composer.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    composer.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from synthetic_server(tmp_path_factory.mktemp("attachments"), text="Noted: Friday.", tokens_per_second=60)


def test_pick_and_drop_files_send_them_and_open_them(server, page, tmp_path) -> None:
    url, _ = server
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES)
    page.locator("#attach-input").set_input_files(str(notes))
    page.locator("#composer-attachments .attachment-chip", has_text="notes.md").wait_for()
    page.evaluate(_DROP, ["figures.csv", "month,sales\njan,3\n"])
    page.locator("#composer-attachments .attachment-chip", has_text="figures.csv").wait_for()

    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(200)))
    page.locator("#attach-input").set_input_files(str(picture))
    page.get_by_role("alert").filter(has_text="“photo.png” is not a text file").wait_for()
    assert page.locator("#composer-attachments .attachment-chip").count() == 2

    page.get_by_role("button", name="Remove figures.csv").click()
    page.get_by_label("Message").fill("When is the launch?")
    page.keyboard.press("Enter")
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    assert page.locator("#composer-attachments .attachment-chip").count() == 0, "the chips went with the message"
    sent = page.locator("article.msg-user .attachment-chip")
    assert sent.count() == 1
    sent.locator("summary").click()
    sent.locator(".attachment-text", has_text="The launch moves to Friday.").wait_for()

    page.reload()
    again = page.locator("article.msg-user .attachment-chip")
    assert again.count() == 1 and "notes.md" in again.inner_text()
