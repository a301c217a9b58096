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
