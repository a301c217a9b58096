"""Helpers the tests share (fixtures live in the conftest.py files)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from django.contrib.auth.models import User
from django.test import Client


def client_for(user: User) -> Client:
    """A test client logged in as ``user``."""
    client = Client()
    client.force_login(user)
    return client


def until(condition: Callable[[], bool], *, timeout: float = 10, what: str = "the condition") -> None:
    """Wait for ``condition()`` to hold, polling, and fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.01)


async def until_async(condition: Callable[[], bool], *, timeout: float = 10, what: str = "the condition") -> None:
    """``until`` for a coroutine: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        await asyncio.sleep(0.01)
