"""A test-side reader of the conversation websocket, rebuilding what a browser shows.

The server sends htmx out-of-band fragments; this applies them the way htmx would
for the parts tests care about: deltas append, snapshots replace, the finished
fragment replaces the whole reply.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatsite.asgi import application

# A delta appends a token's text; a snapshot carries the whole text so far in its <template>
# (the rendered Markdown around both is for browsers: conversations/streaming.py).
DELTA = re.compile(r'<span hx-swap-oob="beforeend:#m-([0-9a-f-]+)-pending">(.*?)</span>', re.S)
SNAPSHOT = re.compile(
    r'<div id="m-([0-9a-f-]+)-text" class="msg-text markdown is-streaming" hx-swap-oob="true">'
    r'.*?<template class="stream-source">(.*?)</template></div>',
    re.S,
)
FINISHED = re.compile(
    r'<article class="msg msg-assistant[^"]*" id="m-([0-9a-f-]+)" data-status="(\w+)" hx-swap-oob="true">'
)
STARTED = re.compile(r'<article class="msg msg-assistant[^"]*" id="m-([0-9a-f-]+)" data-status="streaming"')
ERROR = re.compile(r'<div id="composer-error"[^>]*>(.*?)</div>', re.S)


@dataclass
class ChatSocket:
    communicator: WebsocketCommunicator
    texts: dict[str, str] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)
    frames: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: set[str] = field(default_factory=set)
    delta_count: int = 0

    async def send(self, payload: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(payload))

    async def receive(self, timeout: float = 10) -> str:
        frame = await self.communicator.receive_from(timeout=timeout)
        self.frames.append(frame)
        self.apply(frame)
        return frame

    def apply(self, frame: str) -> None:
        self.started.update(STARTED.findall(frame))
        for message_id, text in SNAPSHOT.findall(frame):
            self.started.add(message_id)
            self.texts[message_id] = html.unescape(text)
        for message_id, text in DELTA.findall(frame):
            self.texts[message_id] = self.texts.get(message_id, "") + html.unescape(text)
            self.delta_count += 1
        for message_id, status in FINISHED.findall(frame):
            self.finished[message_id] = status
        self.errors += [html.unescape(e) for e in ERROR.findall(frame) if e]

    async def until_finished(self, message_id: str | None = None, timeout: float = 30) -> str:
        """Wait at most ``timeout`` seconds in all for ``message_id`` (or any reply this
        socket saw streaming) to end."""
        deadline = time.monotonic() + timeout
        while True:
            await self.receive(timeout=max(0.0, deadline - time.monotonic()))
            candidates = [message_id] if message_id else sorted(self.started)
            done = [candidate for candidate in candidates if candidate in self.finished]
            if done:
                return done[0]

    async def until(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        """Receive frames until ``condition()`` holds, for at most ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        while not condition():
            await self.receive(timeout=max(0.0, deadline - time.monotonic()))

    async def until_deltas(self, count: int, timeout: float = 10) -> None:
        """Wait at most ``timeout`` seconds in all for ``count`` deltas."""
        deadline = time.monotonic() + timeout
        while self.delta_count < count:
            await self.receive(timeout=max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        await self.communicator.disconnect()


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def open_socket(
    user: Any, conversation: Any, *, origin: str = "http://127.0.0.1:8000"
) -> tuple[bool, int | None, ChatSocket]:
    """Connect through the whole ASGI stack (origin check, session auth, routing)."""
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        cookie = await database_sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, f"/ws/c/{conversation.public_id}/", headers=headers)
    connected, code = await communicator.connect()
    return connected, code, ChatSocket(communicator)
