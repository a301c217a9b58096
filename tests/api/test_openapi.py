"""The OpenAPI description at /v1/openapi.json, and schemathesis finding no server error.

schemathesis generates requests from the document (valid ones and invalid ones) and
sends them to the live server with a valid key; a 5xx anywhere fails the test. The
number of examples per operation is bounded so the run takes well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.errors import ApiError
from api.openapi import openapi_document
from api.schemas import parse_chat_request
from tests.api.conftest import LiveServer, _serve

EXAMPLES_PER_OPERATION = os.environ.get("PARLEY_SCHEMATHESIS_EXAMPLES", "25")


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Short replies and at most two choices, so hundreds of generated requests run quickly."""
    tmp = tmp_path_factory.mktemp("fuzz-server")
    yield from _serve(tmp, API_RATE_LIMIT_PER_MINUTE="100000", INFERENCE_MAX_TOKENS_LIMIT="6", API_MAX_CHOICES="2")


def test_the_document_describes_every_endpoint(api_server) -> None:
    with urllib.request.urlopen(f"{api_server.base_url}/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": api_server.base_url}]
    assert {
        "/chat/completions",
        "/chat-completions",
        "/models",
        "/models/{model_id}",
        "/files",
        "/files/{file_id}",
    } <= set(document["paths"])
    assert {"/fine_tuning/jobs", "/fine_tuning/jobs/{job_id}/cancel", "/fine_tuning/jobs/{job_id}/checkpoints"} <= set(
        document["paths"]
    )
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    assert request["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 64, "limits come from the settings"


def test_schemathesis_finds_no_server_error(fuzz_server, tmp_path: Path) -> None:
    alice_key = fuzz_server.new_key("alice")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{fuzz_server.base_url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        EXAMPLES_PER_OPERATION,
        "--header",
        f"Authorization: Bearer {alice_key}",
        "--seed",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "SCHEMATHESIS_HOOKS": ""}
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_the_documents_limits_are_the_ones_requests_are_held_to(settings) -> None:
    """One declaration: change the settings and both the document and validation follow."""
    settings.API_MAX_MESSAGES, settings.API_MAX_CHOICES, settings.INFERENCE_MAX_TOKENS_LIMIT = 3, 2, 10
    document = openapi_document(server_url="http://testserver/v1", model_ids=None)
    request = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert request["messages"]["maxItems"] == 3
    assert request["n"]["anyOf"][0]["maximum"] == 2
    assert request["max_tokens"]["anyOf"][0]["maximum"] == 10
    three = [{"role": "user", "content": "hi"}] * 3
    assert parse_chat_request({"model": "m", "messages": three, "n": 2, "max_tokens": 10}).n == 2
    for too_many, param in (
        ({"messages": [*three, three[0]]}, "messages"),
        ({"n": 3}, "n"),
        ({"max_tokens": 11}, "max_tokens"),
    ):
        with pytest.raises(ApiError) as caught:
            parse_chat_request({"model": "m", "messages": three, **too_many})
        assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stop": ["a", 1]}, "stop[1]"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"response_format": {"type": "json_object"}}, "response_format.type"),
        ({"tools": [{"type": "function"}]}, "tools"),
    ],
)
def test_a_fault_anywhere_in_a_body_is_named_by_its_path(fields, param) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.message.startswith(f"'{param}' ") or param in caught.value.message
