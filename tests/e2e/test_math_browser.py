"""Math in real Chromium: formulas in the four usual delimiters are drawn as MathML (no script,
under the page's content security policy), and copying a selection gives their LaTeX back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.ui import new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

REPLY = (
    "The area is $\\pi r^2$ and the ratio \\(\\frac{a}{b}\\) stays.\n\n"
    "$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$\n\n"
    "\\[\\sqrt{x^2 + y^2}\\]\n\n"
    "It costs $5 and $10."
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from synthetic_server(tmp_path_factory.mktemp("math"), text=REPLY, tokens_per_second=200)


def test_formulas_are_drawn_and_copy_as_latex(server, browser) -> None:
    url, _ = server
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    new_user(page, url)
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.get_by_label("Message").fill("Some formulas, please")
    page.keyboard.press("Enter")
    reply = page.locator("article.msg-assistant[data-status='complete'] .msg-text")
    reply.wait_for()

    formulas = reply.locator("math")
    assert formulas.count() == 4
    assert reply.locator("math[display='block']").count() == 2
    line = reply.locator("p").first.evaluate("p => parseFloat(getComputedStyle(p).fontSize)")
    shown = reply.locator("math[display='block'] mfrac").first.bounding_box()
    assert shown is not None and shown["height"] > 1.6 * line, "a displayed fraction is drawn stacked, not as text"
    numerator, denominator = (reply.locator("mfrac").first.locator("mrow").nth(i).bounding_box() for i in (0, 1))
    assert numerator and denominator and numerator["y"] + numerator["height"] <= denominator["y"] + 1
    assert "$" not in reply.locator("p").first.inner_text(), "no raw delimiters left in the drawn text"
    assert "$5 and $10" in reply.inner_text(), "prices stay text"
    assert violations == []

    reply.locator("p").first.evaluate(
        "p => { const range = document.createRange(); range.selectNodeContents(p);"
        " const selection = getSelection(); selection.removeAllRanges(); selection.addRange(range); }"
    )
    page.keyboard.press("Control+C")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == "The area is $\\pi r^2$ and the ratio $\\frac{a}{b}$ stays."
    page.get_by_role("button", name="Copy").last.click()
    assert page.evaluate("navigator.clipboard.readText()") == REPLY, "the reply's Copy button gives its source"
    context.close()
