"""A /v1 body nested 50,000 levels deep is a 400 naming the field, not a 500."""

from __future__ import annotations

from tests.api.conftest import TINY_MODEL_ID


def test_a_body_nested_50000_levels_deep_is_a_400_naming_the_field(api_server, alice_key) -> None:
    body = f'{{"model": "{TINY_MODEL_ID}", "messages": {"[" * 50_000 + "]" * 50_000}}}'
    status, answer = api_server.post_raw(alice_key, "/chat/completions", body.encode())
    assert status == 400
    assert answer["error"]["param"] == "messages"
    assert answer["error"]["code"] == "invalid_json"
    assert answer["error"]["message"].startswith("'messages' is nested more than 32 levels deep.")
