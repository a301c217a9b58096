"""Property test: the API request parser turns any body into a valid request or a
400 that names the field; it never crashes."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from api.errors import ApiError
from api.schemas import ROLES, parse_chat_request, parse_json_body, parse_seed_request

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from([*ROLES, "tool", "", 1]),
        "content": st.one_of(
            st.text(max_size=40),
            st.lists(
                st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": scalars}), max_size=2
            ),
            scalars,
        ),
    }
)
bodies = st.fixed_dictionaries(
    {
        "model": st.one_of(st.just("smollm2-135m-instruct"), scalars),
        "messages": st.one_of(st.lists(message, max_size=4), values),
    },
    optional={
        name: values | scalars
        for name in (
            "stream",
            "stream_options",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "n",
            "user",
            "logprobs",
            "top_logprobs",
            "store",
            "tools",
            "frequency_penalty",
            "presence_penalty",
            "unknown_field",
        )
    },
)


def check(parse, body) -> None:
    try:
        request = parse(body)
    except ApiError as error:
        assert error.status in (400, 413, 422)
        assert error.message.endswith(".") and len(error.message) > 10, error.message
        assert error.param, f"a 400 names the field at fault: {error.message}"
        payload = error.body()["error"]
        assert set(payload) == {"message", "type", "param", "code"}
        return
    assert request.messages and all(m["role"] in ("system", "user", "assistant") for m in request.messages)
    assert request.max_tokens >= 1 and request.n >= 1
    assert math.isfinite(request.temperature) and math.isfinite(request.top_p)
    assert -2 <= request.presence_penalty <= 2 and -2 <= request.frequency_penalty <= 2
    assert len(request.stop) <= 4 and all(isinstance(s, str) for s in request.stop)


@settings(max_examples=400, deadline=None)
@given(body=bodies)
def test_any_chat_completions_body_is_parsed_or_refused_by_field(body) -> None:
    check(parse_chat_request, body)


@settings(max_examples=200, deadline=None)
@given(body=bodies)
def test_any_seed_shaped_body_is_parsed_or_refused(body) -> None:
    check(parse_seed_request, body)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | values.map(lambda v: json.dumps(v).encode()))
def test_any_raw_body_is_json_object_or_a_clear_400(raw: bytes) -> None:
    try:
        body = parse_json_body(raw)
    except ApiError as error:
        assert error.status == 400 and error.code == "invalid_json"
        return
    assert isinstance(body, dict)
