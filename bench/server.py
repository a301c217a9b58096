"""A throwaway Parley web process on loopback, for the load benchmark and the tests
that drive a real server (browser and scale-out tests)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(env: dict[str, str], *args: str, root: Path = ROOT) -> str:
    """Run ``manage.py ARGS`` of the checkout ``root`` in ``env``; its output, or
    CalledProcessError with it."""
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, text=True).stdout


def daphne_command(port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def synthetic_site_env(workdir: Path, text: str, tokens_per_second: float) -> dict[str, str]:
    """The environment of a site on a fresh SQLite database in ``workdir`` whose engine
    writes ``text`` (whole, at ``tokens_per_second``) instead of running a model."""
    return {
        **os.environ,
        "PARLEY_SECRET_KEY": os.environ.get("PARLEY_SECRET_KEY") or secrets.token_urlsafe(50),
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "PARLEY_STATIC_ROOT": str(workdir / "static"),
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "INFERENCE_BACKEND": "synthetic",
        "INFERENCE_SYNTHETIC_TEXT": text,
        "INFERENCE_SYNTHETIC_TOKENS_PER_SECOND": f"{tokens_per_second:g}",
        "INFERENCE_DEFAULT_MAX_TOKENS": str(-(-len(text) // 5)),
        "INFERENCE_STATUS_REPORTING": "false",
    }


def start_site(workdir: Path, env: dict[str, str], *, root: Path = ROOT) -> tuple[str, subprocess.Popen[bytes]]:
    """Migrate ``env``'s database, collect static files, start daphne from the checkout
    ``root``; its URL and process.

    The server's output goes to ``workdir/server.log``; the caller stops the process.
    """
    manage(env, "migrate", "--noinput", "-v", "0", root=root)
    manage(env, "collectstatic", "--noinput", "-v", "0", root=root)
    port = free_port()
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen(daphne_command(port), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/accounts/login/", process)
    return url, process
