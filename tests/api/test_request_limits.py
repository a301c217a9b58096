"""Bodies built to hold a process: tens of thousands of tiny messages. They are
answered quickly, with a 400 naming the field or (where an operator allows that
many) with a reply, and the server keeps answering everyone else meanwhile."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from api import completions
from api.schemas import ChatRequest
from inference.registry import model_get
from tests.api.conftest import TINY_MODEL_ID, LiveServer, _serve

TINY_MESSAGES = [{"role": "user" if i % 2 == 0 else "assistant", "content": "a"} for i in range(19_999)]
TINY_MESSAGES.append({"role": "user", "content": "b"})


def post(server: LiveServer, key: str, body: bytes) -> tuple[int, dict[str, Any], float]:
    """Status, JSON answer and seconds taken of a POST to /v1/chat/completions."""
    began = time.monotonic()
    status, answer = server.post_raw(key, "/chat/completions", body)
    return status, answer, time.monotonic() - began


def others_wait_while(server: LiveServer, key: str, body: bytes) -> tuple[int, dict[str, Any], float, list[float]]:
    """POST ``body`` and, until it is answered, time other requests (GET /v1/models)."""
    answer: list[tuple[int, dict[str, Any], float]] = []
    big = threading.Thread(target=lambda: answer.append(post(server, key, body)))
    big.start()
    waits = []
    while big.is_alive() or not waits:
        began = time.monotonic()
        models = urllib.request.Request(f"{server.base_url}/models", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(models, timeout=60) as response:
            assert response.status == 200
        waits.append(time.monotonic() - began)
    big.join()
    return (*answer[0], waits)


def test_20000_messages_are_refused_at_once_naming_the_field(api_server, alice_key) -> None:
    body = json.dumps({"model": TINY_MODEL_ID, "messages": TINY_MESSAGES, "max_tokens": 4}).encode()
    status, answer, seconds, waits = others_wait_while(api_server, alice_key, body)
    assert status == 400, answer
    assert answer["error"]["param"] == "messages"
    assert answer["error"]["message"] == "'messages' holds 20,000 messages; the limit is 2,048 a request."
    assert seconds < 2
    assert max(waits) < 1


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that lets 20,000 messages through to the model."""
    yield from _serve(tmp_path_factory.mktemp("roomy-server"), API_MAX_MESSAGES="100000")


def test_20000_messages_where_allowed_are_fitted_quickly_while_others_are_served(roomy_server) -> None:
    key = roomy_server.new_key("alice", "long history")
    body = json.dumps({"model": TINY_MODEL_ID, "messages": TINY_MESSAGES, "max_tokens": 4, "n": 4}).encode()
    post(roomy_server, key, json.dumps({"model": TINY_MODEL_ID, "messages": TINY_MESSAGES[-1:]}).encode())  # loads
    status, answer, seconds, waits = others_wait_while(roomy_server, key, body)
    assert status == 200, answer
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2, 3]
    assert answer["usage"]["prompt_tokens"] <= 512, "the oldest turns were dropped to fit the tiny model"
    assert seconds < 2
    assert max(waits) < 1, "the fitting ran off the event loop"


async def _five_choices_counting_fits(monkeypatch) -> tuple[completions.Completion, list[int]]:
    from asgiref.sync import sync_to_async

    from inference import gateway

    fits: list[int] = []
    fit_prompt = gateway.fit_prompt
    monkeypatch.setattr(gateway, "fit_prompt", lambda *args, **kwargs: fits.append(1) or fit_prompt(*args, **kwargs))
    spec = await sync_to_async(model_get)(TINY_MODEL_ID)
    request = ChatRequest(model=TINY_MODEL_ID, messages=TINY_MESSAGES[-3:], n=5, max_tokens=4)
    completion = await completions.completion_open(spec=spec, request=request)
    await completions.completion_collect(completion=completion)
    return completion, fits


@pytest.mark.django_db
async def test_the_prompt_is_fitted_once_for_all_choices(scripted_engine, monkeypatch) -> None:
    completion, fits = await _five_choices_counting_fits(monkeypatch)
    assert len(fits) == 1
    assert [choice.text for choice in completion.choices] == ["Hello, world."] * 5


@pytest.mark.django_db
async def test_choices_served_by_a_generation_worker_are_fitted_once_too(remote_worker, monkeypatch) -> None:
    completion, fits = await _five_choices_counting_fits(monkeypatch)
    assert len(fits) == 1
    assert [choice.text for choice in completion.choices] == ["Hello, world."] * 5
