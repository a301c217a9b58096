"""A scripted browser for Parley over plain HTTP and websockets.

``Browser`` signs up and creates chats with cookies, as a person's browser does;
``ChatSocket`` holds a conversation's websocket and rebuilds each reply from the
server's HTML fragments (snapshots replace, deltas append, the final render ends it).
Used by ``bench.load`` and by the multi-process tests.
"""

from __future__ import annotations

import asyncio
import html
import http.cookiejar
import json
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect


class Browser:
    """A user's cookies and pages over plain HTTP (sign-up, new chat)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name and c.value)

    def get(self, path: str) -> tuple[str, str]:
        with self.opener.open(self.base_url + path, timeout=30) as response:
            return response.geturl(), response.read().decode()

    def post(self, path: str, data: dict[str, str]) -> tuple[str, str]:
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self.cookie("csrftoken")}).encode()
        request = urllib.request.Request(self.base_url + path, data=body, headers={"Referer": self.base_url + path})
        with self.opener.open(request, timeout=30) as response:
            return response.geturl(), response.read().decode()

    def sign_up(self, username: str) -> None:
        self.get("/accounts/signup/")
        password = "a long pass phrase 42"
        self.post("/accounts/signup/", {"username": username, "password1": password, "password2": password})

    def log_in(self, username: str, password: str) -> None:
        self.get("/accounts/login/")
        self.post("/accounts/login/", {"username": username, "password": password})

    def new_chat(self, **chat_settings: str) -> str:
        final_url, _ = self.post("/c/new/", {})
        conversation_id = final_url.rstrip("/").rsplit("/", 1)[-1]
        if chat_settings:
            defaults = {"model_name": "tiny-llama", "system_prompt": "", "temperature": "0", "max_tokens": "24"}
            self.post(f"/c/{conversation_id}/settings/", {**defaults, **chat_settings})
        return conversation_id


# A delta appends a token's text; a snapshot carries the whole text so far in its <template>
# (the rendered Markdown around both is for browsers: conversations/streaming.py).
DELTA = re.compile(r'<span hx-swap-oob="beforeend:#m-([0-9a-f-]+)-pending">(.*?)</span>', re.S)
SNAPSHOT = re.compile(
    r'<div id="m-([0-9a-f-]+)-text" class="msg-text markdown is-streaming" hx-swap-oob="true">'
    r'.*?<template class="stream-source">(.*?)</template></div>',
    re.S,
)
STARTED = re.compile(r'<article class="msg msg-assistant[^"]*" id="m-([0-9a-f-]+)" data-status="streaming"')
FINISHED = re.compile(
    r'<article class="msg msg-assistant[^"]*" id="m-([0-9a-f-]+)" data-status="(\w+)" hx-swap-oob="true">'
)


@dataclass
class ChatSocket:
    """A websocket on one daphne process, rebuilding the reply as a browser would."""

    browser: Browser
    web_url: str
    conversation_id: str
    texts: dict[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    deltas: int = 0
    sent_at: float | None = None
    first_delta_at: float | None = None

    async def __aenter__(self) -> ChatSocket:
        ws_url = self.web_url.replace("http://", "ws://") + f"/ws/c/{self.conversation_id}/"
        headers = {"Cookie": f"sessionid={self.browser.cookie('sessionid')}", "Origin": self.web_url}
        self.socket = await connect(ws_url, additional_headers=headers, open_timeout=30)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.socket.close()

    async def send(self, text: str) -> None:
        self.sent_at = time.monotonic()
        await self.socket.send(json.dumps({"action": "send", "message": text}))

    async def stop(self) -> None:
        await self.socket.send(json.dumps({"action": "stop"}))

    def apply(self, frame: str) -> None:
        self.frames += 1
        self.started += [m for m in STARTED.findall(frame) if m not in self.started]
        for message_id, text in SNAPSHOT.findall(frame):
            self.texts[message_id] = html.unescape(text)
            if message_id not in self.started:
                self.started.append(message_id)
        for message_id, text in DELTA.findall(frame):
            self.first_delta_at = self.first_delta_at or time.monotonic()
            self.deltas += 1
            self.texts[message_id] = self.texts.get(message_id, "") + html.unescape(text)
        for message_id, status in FINISHED.findall(frame):
            self.finished[message_id] = status

    async def until(self, condition: Any, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.apply(str(await self.socket.recv()))

    async def until_finished(self, timeout: float = 60) -> str:
        await self.until(lambda: any(m in self.finished for m in self.started), timeout)
        return next(m for m in self.started if m in self.finished)
