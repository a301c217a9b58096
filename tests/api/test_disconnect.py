"""A client that hangs up mid-stream frees its slot in the engine at once.

This drives the whole ASGI application in-process (as daphne would), reads a few SSE
chunks, then sends ``http.disconnect`` and watches the engine get the cancel.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async

from api.keys.services import api_key_create
from chatsite.asgi import application
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.django_db(transaction=True)


class HangingUpClient:
    """Sends one POST, collects body chunks, and disconnects after ``hang_up_after`` of them."""

    def __init__(self, body: dict[str, Any], key: str, hang_up_after: int) -> None:
        self.body = json.dumps(body).encode()
        self.key = key
        self.hang_up_after = hang_up_after
        self.chunks: list[bytes] = []
        self.status: int | None = None
        self.hung_up = asyncio.Event()
        self.sent_body = False

    def scope(self, path: str) -> dict[str, Any]:
        headers = [(b"authorization", f"Bearer {self.key}".encode()), (b"content-type", b"application/json")]
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [*headers, (b"host", b"testserver")],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }

    async def receive(self) -> dict[str, Any]:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            self.chunks.append(message["body"])
            if len(self.chunks) >= self.hang_up_after:
                self.hung_up.set()


async def test_a_client_that_disconnects_mid_stream_frees_its_engine_slot(alice, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine([f"word{index} " for index in range(400)], delay=0.02))
    created = await database_sync_to_async(api_key_create)(owner=alice, name="disconnect")
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Talk"}], "stream": True}
    client = HangingUpClient(body, created.secret, hang_up_after=4)
    await asyncio.wait_for(application(client.scope("/v1/chat/completions"), client.receive, client.send), 10)
    assert client.status == 200
    assert b'"word2 "' in b"".join(client.chunks)
    request_id = engine.requests[0].request_id
    assert request_id in engine.cancelled, "the engine was not told to stop the abandoned request"
    assert len(client.chunks) < 20, "the stream kept going after the client left"
    assert await asyncio.to_thread(engine.join), "the engine delivered its last event before the loop closes"


async def test_a_client_that_disconnects_before_a_whole_reply_frees_its_slots_too(alice, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine([f"word{index} " for index in range(400)], delay=0.02))
    created = await database_sync_to_async(api_key_create)(owner=alice, name="disconnect")
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Talk"}], "n": 2}
    client = HangingUpClient(body, created.secret, hang_up_after=1)

    async def give_up_once_writing_started() -> None:
        await asyncio.to_thread(engine.started.wait, 10)
        client.hung_up.set()

    giving_up = asyncio.create_task(give_up_once_writing_started())
    await asyncio.wait_for(application(client.scope("/v1/chat/completions"), client.receive, client.send), 10)
    await giving_up
    assert client.status is None, "no response was sent to a client that had left"
    assert len(engine.requests) == 2
    assert {request.request_id for request in engine.requests} <= engine.cancelled
    assert await asyncio.to_thread(engine.join), "the engine delivered its last events before the loop closes"
