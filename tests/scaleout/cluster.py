"""Parley as it runs across machines, started for real on this one.

A private Redis server, a fresh PostgreSQL database, several daphne processes and
several generation workers (``manage.py runworker inference``), all with the same
settings from the environment. Tests reach it the way browsers do: HTTP sign-up and
login with cookies, and websockets through the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import html
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


@dataclass
class Cluster:
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_port: int = 0
    database: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    web_ports: dict[str, int] = field(default_factory=dict)

    # -- Lifecycle ----------------------------------------------------------------

    def start(self, *, webs: int = 2, workers: int = 2) -> Cluster:
        self.start_redis()
        self.create_database()
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")
        for index in range(webs):
            self.start_web(f"web{index}")
        for index in range(workers):
            self.start_worker(f"worker{index}")
        return self

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": f"postgresql://root@127.0.0.1:5432/{self.database}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "INFERENCE_MODE": "remote",
            "PARLEY_STATIC_ROOT": str(self.workdir / "static"),
            "INFERENCE_CACHE_DIR": str(ROOT / ".cache" / "models"),
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PYTEST_CURRENT_TEST", None)
        env.update(self.extra_env)
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return result.stdout

    def spawn(self, name: str, command: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_redis(self) -> None:
        self.redis_port = self.redis_port or free_port()
        self.spawn(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        )
        wait_for_port(self.redis_port)

    def create_database(self) -> None:
        self.database = f"parley_scaleout_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def start_web(self, name: str) -> None:
        port = self.web_ports.get(name) or free_port()
        self.web_ports[name] = port
        self.spawn(
            name, [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
        )
        wait_for_port(port)

    def start_worker(self, name: str) -> None:
        self.spawn(name, [sys.executable, "manage.py", "runworker", "inference"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def url(self, web: str) -> str:
        return f"http://127.0.0.1:{self.web_ports[web]}"


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

    def new_chat(self, **chat_settings: str) -> str:
        final_url, _ = self.post("/c/new/", {})
        conversation_id = final_url.rstrip("/").rsplit("/", 1)[-1]
        if chat_settings:
            defaults = {"model_name": "tiny-llama", "system_prompt": "", "temperature": "0", "max_tokens": "24"}
            self.post(f"/c/{conversation_id}/settings/", {**defaults, **chat_settings})
        return conversation_id


DELTA = re.compile(r'<span hx-swap-oob="beforeend:#m-([0-9a-f-]+)-text">(.*?)</span>', re.S)
SNAPSHOT = re.compile(
    r'<div id="m-([0-9a-f-]+)-text" class="msg-text is-streaming" hx-swap-oob="true">(.*?)</div>', re.S
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
    first_delta_at: float | None = None

    async def __aenter__(self) -> ChatSocket:
        ws_url = self.web_url.replace("http://", "ws://") + f"/ws/c/{self.conversation_id}/"
        headers = {"Cookie": f"sessionid={self.browser.cookie('sessionid')}", "Origin": self.web_url}
        self.socket = await connect(ws_url, additional_headers=headers, open_timeout=30)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.socket.close()

    async def send(self, text: str) -> None:
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
