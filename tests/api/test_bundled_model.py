"""The bundled model answers through the openai client, streaming, on a live server."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.conftest import LiveServer
from tests.e2e.conftest import server_env, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("bundled-api-server")
    env = server_env(tmp)  # INFERENCE_MODEL=bundled, as `make run` serves it
    url, process = start_server(tmp, env)
    server = LiveServer(url=url, env=env)
    server.manage("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('alice')")
    yield server
    process.terminate()
    process.wait(timeout=20)


def test_the_bundled_model_answers_a_question_in_a_stream(bundled_server) -> None:
    client = openai.OpenAI(base_url=bundled_server.base_url, api_key=bundled_server.new_key("alice"), max_retries=0)
    assert "smollm2-135m-instruct" in [model.id for model in client.models.list()]
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
        timeout=300,
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Paris" in text
    assert chunks[-1].usage.completion_tokens > 0
