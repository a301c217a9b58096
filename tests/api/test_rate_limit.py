"""Per-key rate limits (API_RATE_LIMIT_PER_MINUTE) raise the openai client's RateLimitError."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.conftest import LiveServer, _serve

LIMIT = 3


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from _serve(tmp_path_factory.mktemp("limited-server"), API_RATE_LIMIT_PER_MINUTE=str(LIMIT))


def _client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_a_key_over_its_limit_gets_a_rate_limit_error(limited_server) -> None:
    key = _client(limited_server, limited_server.new_key("alice", "busy"))
    other = _client(limited_server, limited_server.new_key("alice", "quiet"))
    served = 0
    with pytest.raises(openai.RateLimitError) as caught:
        # Up to two windows' worth, in case the minute turns over mid-test.
        for _ in range(2 * LIMIT + 1):
            key.models.list()
            served += 1
    assert served >= LIMIT
    assert f"{LIMIT} requests per minute" in caught.value.message
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    assert other.models.list().data, "another key keeps its own allowance"
