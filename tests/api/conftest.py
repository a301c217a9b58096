"""A live Parley server on the tiny model for API tests, with alice's and bob's keys.

The server is a real daphne process on its own SQLite file (tests/e2e/conftest.py's
``start_server``); tests reach its database only through manage.py, as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TINY_MODEL_DIR
from tests.e2e.conftest import server_env, start_server
from tests.tiny_model import save_tiny_model

TINY_MODEL_ID = "tiny-llama"

SETUP_USERS = """
from django.contrib.auth.models import User
for name in ("alice", "bob"):
    User.objects.filter(username=name).exists() or User.objects.create_user(name, password=name + " horse battery")
"""


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise AssertionError(f"manage.py {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def shell(self, code: str) -> Any:
        """Run Python in the server's Django; what it prints as JSON comes back."""
        output = self.manage("shell", "--no-imports", "-c", code).strip()
        return json.loads(output.splitlines()[-1]) if output else None

    def new_key(self, username: str, name: str = "tests") -> str:
        return self.manage("create_api_key", username, "--name", name).strip()

    def post_raw(self, key: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Status and JSON answer of a POST of ``body`` as it is (no client library's checks)."""
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def _serve(tmp: Path, **settings: str) -> Iterator[LiveServer]:
    save_tiny_model(TINY_MODEL_DIR)
    env = server_env(
        tmp,
        INFERENCE_MODEL=str(TINY_MODEL_DIR),
        PARLEY_MEDIA_ROOT=str(tmp / "media"),  # uploaded training files stay out of the checkout
        FINETUNE_OUTPUT_DIR=str(tmp / "finetuned"),
        **settings,
    )
    url, process = start_server(tmp, env)
    server = LiveServer(url=url, env=env)
    server.manage("shell", "-c", SETUP_USERS)
    yield server
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The tiny model, a generous rate limit and short replies (fast schemathesis runs)."""
    tmp = tmp_path_factory.mktemp("api-server")
    yield from _serve(tmp, API_RATE_LIMIT_PER_MINUTE="100000", INFERENCE_MAX_TOKENS_LIMIT="64")


@pytest.fixture(scope="session")
def alice_key(api_server: LiveServer) -> str:
    return api_server.new_key("alice", "alice's tests")


@pytest.fixture(scope="session")
def bob_key(api_server: LiveServer) -> str:
    return api_server.new_key("bob", "bob's tests")


@pytest.fixture
def client(api_server: LiveServer, alice_key: str):
    from openai import OpenAI

    with OpenAI(base_url=api_server.base_url, api_key=alice_key, max_retries=0, timeout=60) as openai_client:
        yield openai_client
