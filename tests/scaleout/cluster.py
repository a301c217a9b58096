"""Parley as it runs across machines, started for real on this one.

A private Redis server, a fresh PostgreSQL database, several daphne processes and
several generation workers (``manage.py runworker inference``), all with the same
settings from the environment. Tests reach it the way browsers do: HTTP sign-up and
login with cookies, and websockets through the ``websockets`` library.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.client import Browser, ChatSocket
from bench.server import ROOT, daphne_command, free_port, manage

__all__ = ["ROOT", "Browser", "ChatSocket", "Cluster", "streamed_start_of"]

PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"


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
        return manage(self.env, *args)

    def spawn(self, name: str, command: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        env = {**self.env, "PYTHONUNBUFFERED": "1"}  # its log shows each line as it is written
        self.processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

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
        self.spawn(name, daphne_command(port))
        wait_for_port(port)

    def start_worker(self, name: str, timeout: float = 60) -> None:
        """Start a generation worker and wait until it listens on the channel layer. A
        reply sent before waits unclaimed, and on a loaded machine the worker's start can
        outlast a short ``INFERENCE_STALE_AFTER_SECONDS``, which fails that reply as if a
        worker had died with it."""
        ready = "Running worker for channels"
        path = self.workdir / f"{name}.log"
        before = path.read_text(errors="replace").count(ready) if path.exists() else 0
        self.spawn(name, [sys.executable, "manage.py", "runworker", "inference"])
        deadline = time.monotonic() + timeout
        while self.log(name).count(ready) <= before:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}: {self.log(name)[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not listening within {timeout} s: {self.log(name)[-2000:]}")
            time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def reply(self, message_id: str) -> tuple[str, str, str, str]:
        """A stored reply's status, finish reason, content and error."""
        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            row = conn.execute(
                "select status, finish_reason, content, error from conversations_message where public_id = %s",
                (message_id,),
            ).fetchone()
        assert row is not None, f"reply {message_id} is stored"
        return row

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def url(self, web: str) -> str:
        return f"http://127.0.0.1:{self.web_ports[web]}"


def streamed_start_of(socket: ChatSocket, message_id: str, content: str) -> bool:
    """Whether what ``socket`` streamed of a reply is a start of its stored ``content``. A
    socket that fell behind a fast reply gets the rest in the finished reply's render,
    which replaces the stream (its watch found the reply ended before it had read every
    delta), so it may have streamed only part of it, or none."""
    return content.startswith(socket.texts.get(message_id, ""))
