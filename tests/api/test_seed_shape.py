"""The seed's own chat-completions shape (Spellbook's: the model answers as the "agent" and
requests no tool), with plain HTTP (urllib), streaming and not."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.api.conftest import TINY_MODEL_ID

MESSAGES = [{"role": "user", "content": "Hello"}]


def _request(api_server, key: str, body: dict) -> urllib.request.Request:
    return urllib.request.Request(
        f"{api_server.base_url}/chat-completions",
        data=json.dumps(body).encode(),
        headers={"x-api-key": key, "Content-Type": "application/json"},
    )


def test_it_answers_in_the_seed_shape(api_server, alice_key) -> None:
    request = _request(api_server, alice_key, {"model": TINY_MODEL_ID, "messages": MESSAGES, "stream": False})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert set(body) == {"chat_completion", "token_usage"}
    message = body["chat_completion"]["message"]
    assert set(message) == {"role", "content", "tool_request"}
    assert message["role"] == "agent"
    assert message["tool_request"] is None
    assert isinstance(message["content"], str)
    assert body["chat_completion"]["finish_reason"] in ("stop", "length")
    usage = body["token_usage"]
    assert usage["prompt"] > 0 and usage["total"] == usage["prompt"] + usage["completion"]


def test_it_streams_in_the_seed_shape(api_server, alice_key) -> None:
    request = _request(api_server, alice_key, {"model": TINY_MODEL_ID, "messages": MESSAGES, "stream": True})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [json.loads(block.removeprefix("data: ")) for block in response.read().decode().split("\n\n") if block]
    *deltas, last = events
    assert all(event["chat_completion"]["finish_reason"] is None for event in deltas)
    assert all(event["chat_completion"]["message"]["role"] == "agent" for event in events)
    assert all(event["chat_completion"]["message"]["tool_request"] is None for event in events)
    assert last["chat_completion"]["finish_reason"] in ("stop", "length")
    assert last["token_usage"]["completion"] >= len(deltas)
    assert last["token_usage"]["total"] == last["token_usage"]["prompt"] + last["token_usage"]["completion"]


def test_the_seed_shape_needs_a_key(api_server) -> None:
    request = _request(api_server, "wrong", {"model": TINY_MODEL_ID, "messages": MESSAGES})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["error"]["code"] == "invalid_api_key"


def test_the_seed_shape_names_a_bad_field(api_server, alice_key) -> None:
    request = _request(api_server, alice_key, {"model": TINY_MODEL_ID, "messages": "hello"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"]["param"] == "messages"
