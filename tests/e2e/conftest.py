"""A real Parley server (daphne, its own SQLite file) and real Chromium for browser tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.server import ROOT
from bench.server import start_site as start_server

__all__ = ["ROOT", "server_env", "start_server"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def server_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "PARLEY_STATIC_ROOT": str(tmp / "static"),
        "INFERENCE_CACHE_DIR": str(ROOT / ".cache" / "models"),
        "INFERENCE_MODEL": "bundled",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def parley_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Parley on the bundled model, as `make run` serves it."""
    tmp = tmp_path_factory.mktemp("parley-server")
    url, process = start_server(tmp, server_env(tmp))
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Module scope: playwright's sync API keeps an event loop running while it is
    # open, which the asyncio tests of later modules must not inherit.
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package.")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
