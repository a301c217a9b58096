"""The multi-process tests reuse the browser tests' Chromium fixtures."""

from __future__ import annotations

from tests.e2e.conftest import browser, page

__all__ = ["browser", "page"]
