"""Fair use of the model: one person's share of generations, shared by chat and the API;
a bound on the work one process lets wait; who may sign up, and how often.

API requests go through the whole ASGI application in-process, on a scripted engine
that holds every reply after its first piece until the test lets go, so "running"
means running for as long as the test needs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.urls import reverse

from api.keys.services import api_key_create
from chatsite.asgi import application
from conversations import services
from conversations.generation import generation_start_local, generation_wait_idle
from conversations.models import Message
from inference.runtime import process_runtime
from tests.fakes import ScriptedEngine
from tests.helpers import until_async

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    cache.clear()  # slots and sign-up counts live in the cache
    yield
    cache.clear()


@pytest.fixture
def held(scripted_engine) -> Iterator[ScriptedEngine]:
    """Every reply writes one piece, then waits for ``held.release``."""
    engine = scripted_engine(ScriptedEngine(["Hello", ", ", "world", "."], hold_after=1))
    yield engine
    engine.release.set()


class Call:
    """One POST to /v1/chat/completions through the ASGI app, kept open until it ends."""

    def __init__(self, key: str, **body: Any) -> None:
        self.body = json.dumps({"model": "tiny-llama", "messages": HELLO, **body}).encode()
        self.key = key
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.content = b""
        self.answered = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self, *, answered: bool = True) -> Call:
        """Send it; wait for the response to begin unless ``answered`` is False (a whole
        reply held by the engine is not answered until it is let go)."""
        self.task = asyncio.get_running_loop().create_task(application(self.scope(), self.receive, self.send))
        if answered:
            await asyncio.wait_for(self.answered.wait(), 10)
        return self

    def scope(self) -> dict[str, Any]:
        headers = [(b"authorization", f"Bearer {self.key}".encode()), (b"content-type", b"application/json")]
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "headers": [*headers, (b"host", b"testserver")],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves on its own
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {name.decode().lower(): value.decode() for name, value in message["headers"]}
            self.answered.set()
        elif message["type"] == "http.response.body":
            self.content += message.get("body", b"")

    def error(self) -> dict[str, Any]:
        return dict(json.loads(self.content)["error"])

    async def finish(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def key_of(user: User) -> str:
    return (await database_sync_to_async(api_key_create)(owner=user, name="fair use")).secret


async def let_go(engine: ScriptedEngine, calls: list[Call]) -> None:
    """Let every held reply end, and wait until their slots are free again."""
    engine.release.set()
    for call in calls:
        await call.finish()
    await until_async(lambda: process_runtime().background_running == 0)


async def test_an_api_user_past_their_share_gets_a_429_and_others_are_served(alice, bob, held, settings) -> None:
    settings.INFERENCE_MAX_STREAMS_PER_USER = 3
    alice_key, bob_key = await key_of(alice), await key_of(bob)
    running = [await Call(alice_key, stream=True).start(), await Call(alice_key, n=2).start(answered=False)]
    await until_async(lambda: len(held.requests) == 3)
    assert running[0].status == 200
    refused = await Call(alice_key, stream=True).start()
    await refused.finish()
    assert refused.status == 429
    assert refused.headers["retry-after"] == "5"
    assert refused.error()["message"] == (
        "You have 3 generations running (0 in chat, 3 through the API) and may run 3 at once; "
        "this needs 1 more. Wait for one to finish."
    )
    bobs = await Call(bob_key, stream=True).start()
    assert bobs.status == 200, "another person's share is their own"
    await let_go(held, [*running, bobs])
    assert running[1].status == 200 and len(json.loads(running[1].content)["choices"]) == 2
    again = await Call(alice_key).start()
    await again.finish()
    assert again.status == 200, "the share comes back when the replies end"


async def test_chat_and_the_api_count_against_one_share(alice, held, settings) -> None:
    settings.INFERENCE_MAX_STREAMS_PER_USER = 3
    key = await key_of(alice)
    chats = [await database_sync_to_async(services.conversation_create)(owner=alice) for _ in range(3)]
    for chat in chats[:2]:  # two replies being written in chat
        await database_sync_to_async(services.turn_start)(conversation=chat, text="Tell me a story")
    two = await Call(key, n=2).start()
    await two.finish()
    assert two.status == 429
    assert "(2 in chat, 0 through the API)" in two.error()["message"]
    one = await Call(key, stream=True).start()
    assert one.status == 200
    with pytest.raises(ValidationError) as refused:
        await database_sync_to_async(services.turn_start)(conversation=chats[2], text="And another")
    assert refused.value.messages == [
        "You have 3 generations running (2 in chat, 1 through the API) and may run 3 at once; "
        "this needs 1 more. Wait for one to finish."
    ]
    await let_go(held, [one])


async def test_n_beyond_anyones_share_is_a_400_naming_n(alice, held, settings) -> None:
    settings.INFERENCE_MAX_STREAMS_PER_USER = 2
    call = await Call(await key_of(alice), n=3).start()
    await call.finish()
    assert call.status == 400
    assert call.error()["param"] == "n"
    assert call.error()["message"] == "'n' asks for 3 choices; one person may run 2 generations at once."


async def test_a_full_queue_turns_api_calls_away_with_503_and_chat_says_the_server_is_busy(
    alice, bob, held, settings
) -> None:
    settings.INFERENCE_MAX_BATCH_SIZE, settings.INFERENCE_MAX_QUEUED_REQUESTS = 1, 1
    running = [await Call(await key_of(user), stream=True).start() for user in (alice, bob)]
    busy = await Call(await key_of(alice), stream=True).start()
    await busy.finish()
    assert [call.status for call in running] == [200, 200]
    assert busy.status == 503
    assert busy.headers["retry-after"] == "5"
    assert busy.error()["message"] == (
        "The server is busy: it is writing or queueing as many replies as it may (2). Try again in a few seconds."
    )
    chat = await database_sync_to_async(services.conversation_create)(owner=bob)
    turn = await database_sync_to_async(services.turn_start)(conversation=chat, text="Hello?")
    generation_start_local(message_pk=turn.assistant_message.pk)
    await generation_wait_idle()
    reply = await Message.objects.aget(pk=turn.assistant_message.pk)
    assert (reply.status, reply.error) == ("error", busy.error()["message"])
    await let_go(held, running)


async def test_a_busy_generation_worker_refuses_and_the_web_process_answers_503(
    alice, bob, held, settings, remote_worker
) -> None:
    settings.INFERENCE_MAX_BATCH_SIZE, settings.INFERENCE_MAX_QUEUED_REQUESTS = 1, 0
    running = await Call(await key_of(alice), stream=True).start()
    busy = await Call(await key_of(bob), stream=True).start()
    await busy.finish()
    assert (running.status, busy.status, busy.headers["retry-after"]) == (200, 503, "5")
    assert busy.error()["message"].startswith("The server is busy: it is writing or queueing as many replies as it may (1).")
    await let_go(held, [running])


# -- Sign-up ---------------------------------------------------------------------------


def sign_up(client, username: str, address: str = "203.0.113.7"):
    password = "a long pass phrase 42"
    form = {"username": username, "password1": password, "password2": password}
    return client.post(reverse("signup"), form, REMOTE_ADDR=address)


def test_closed_sign_up_says_so_and_creates_no_account(client, settings) -> None:
    settings.PARLEY_SIGNUP = "closed"
    page = client.get(reverse("signup"))
    assert page.status_code == 200
    assert "Accounts on this Parley are created by its administrators" in page.content.decode()
    assert sign_up(client, "mallory").status_code == 403
    assert not User.objects.filter(username="mallory").exists()


def test_sign_ups_from_one_address_are_throttled(client, settings) -> None:
    settings.PARLEY_SIGNUPS_PER_HOUR = 2
    for name in ("dave", "erin"):
        assert sign_up(client, name).status_code == 302
        client.logout()
    third = sign_up(client, "frank")
    assert third.status_code == 429
    assert "Too many accounts were created from your network in the last hour" in third.content.decode()
    assert not User.objects.filter(username="frank").exists()
    assert sign_up(client, "frank", address="198.51.100.20").status_code == 302, "another address is not held back"
