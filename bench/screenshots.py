"""Pictures of the chat for docs/: light and dark, a new chat, a reply streaming and finished.

    python -m bench.screenshots                  # writes docs/screenshots/*.png
    python -m bench.screenshots --out /tmp/shots

It starts daphne on a fresh SQLite database with the synthetic engine writing a fixed
Markdown reply (a heading, a list, a table, code and math) at a readable pace, signs up in
Debian's Chromium (headless, as the browser tests drive it) once per colour scheme, and
saves the new chat with its starter prompts, the reply while it streams (once its table is
on the page) and the finished reply. Anyone can rerun it; the pictures change only when
the pages do.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
from pathlib import Path

from bench.server import ROOT, start_site, synthetic_site_env

CHROMIUM = "/usr/bin/chromium"
PROMPT = "How do I bake bread, and how much flour per loaf?"
REPLY = (
    "## Bread in four steps\n\nYou need only a few things:\n\n- 500 g **flour**\n- 350 ml water\n- 10 g salt\n"
    "- 5 g yeast\n\n| Step | Time |\n|---|---|\n| Mix and knead | 10 min |\n| Rise | 2 h |\n| Bake at 230 °C | 40 min |\n\n"
    "```python\ndef flour_for(loaves: int, grams_each: int = 500) -> int:\n    return loaves * grams_each\n```\n\n"
    "For $n$ loaves you need $500n$ grams of flour, and the water is\n\n$$w = 0.7 \\times f$$\n\n"
    "Let the loaf cool for an hour before cutting it, or the crumb turns gummy."
)


def serve(workdir: Path) -> tuple[str, object]:
    return start_site(workdir, synthetic_site_env(workdir, REPLY, 25))


def shoot(url: str, out: Path, scheme: str, browser: object) -> list[Path]:
    context = browser.new_context(viewport={"width": 1200, "height": 860}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{url}/accounts/signup/")
    page.get_by_label("Username").fill(f"{scheme}{secrets.token_hex(3)}")
    page.get_by_label("Password", exact=True).fill("a long pass phrase 42")
    page.get_by_label("Password confirmation").fill("a long pass phrase 42")
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.wait_for_load_state()
    saved = [out / f"chat-{scheme}-new.png"]
    page.screenshot(path=saved[-1])
    page.get_by_label("Message").fill(PROMPT)
    page.keyboard.press("Enter")
    page.locator("article.msg-assistant[data-status='streaming'] .msg-text pre").wait_for()
    saved.append(out / f"chat-{scheme}-streaming.png")
    page.screenshot(path=saved[-1])
    page.locator("article.msg-assistant[data-status='complete']").wait_for()
    page.mouse.move(0, 0)
    saved.append(out / f"chat-{scheme}-finished.png")
    page.screenshot(path=saved[-1])
    context.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        url, process = serve(Path(workdir))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                for scheme in ("light", "dark"):
                    for path in shoot(url, args.out, scheme, browser):
                        print(path)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
