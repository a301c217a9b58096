"""Log probabilities through the official openai client (tiny model), streaming and not:
one entry per completion token, in OpenAI's shape, and only when asked."""

from __future__ import annotations

import openai
import pytest
from channels_redis.serializers import registry

from inference.engine.types import TokenEvent, TokenLogprob
from inference.gateway import event_from_message, event_to_message
from tests.api.conftest import TINY_MODEL_ID

HELLO = [{"role": "user", "content": "Hello there"}]
GREEDY = {"model": TINY_MODEL_ID, "messages": HELLO, "max_tokens": 12, "temperature": 0}
# The tiny model's tokens are single bytes: sampled, it writes pieces of characters
# that are held back until complete, and may write its end token.
SAMPLED = {"model": TINY_MODEL_ID, "messages": HELLO, "max_tokens": 40, "temperature": 1.0, "seed": 4}


def check_entry(entry, top_logprobs: int) -> None:
    assert entry.logprob <= 0
    assert all(isinstance(byte, int) and 0 <= byte <= 255 for byte in entry.bytes)
    values = [top.logprob for top in entry.top_logprobs]
    assert len(values) == top_logprobs
    assert values == sorted(values, reverse=True)
    assert all(value <= 0 for value in values)


def test_each_choice_has_one_entry_per_completion_token(client) -> None:
    reply = client.chat.completions.create(**GREEDY, n=2, logprobs=True, top_logprobs=5)
    assert sum(len(choice.logprobs.content) for choice in reply.choices) == reply.usage.completion_tokens
    for choice in reply.choices:
        assert choice.logprobs.refusal is None
        for entry in choice.logprobs.content:
            check_entry(entry, 5)
            best = entry.top_logprobs[0]
            assert (best.token, best.bytes, best.logprob) == (entry.token, entry.bytes, entry.logprob), (
                "at temperature 0 the chosen token is the most likely one"
            )


@pytest.mark.parametrize("request_fields", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_stream_carries_the_entries_of_each_delta(client, request_fields) -> None:
    stream = client.chat.completions.create(
        **request_fields, logprobs=True, top_logprobs=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    choice_chunks = [chunk for chunk in chunks if chunk.choices]
    assert all(chunk.choices[0].logprobs is not None for chunk in choice_chunks)
    streamed = [entry for chunk in choice_chunks for entry in chunk.choices[0].logprobs.content]
    assert len(streamed) == chunks[-1].usage.completion_tokens
    assert all(chunk.choices[0].logprobs.content for chunk in choice_chunks if chunk.choices[0].delta.content), (
        "text arrives with the entries of the tokens that wrote it"
    )
    for entry in streamed:
        check_entry(entry, 2)
    whole = client.chat.completions.create(**request_fields, logprobs=True, top_logprobs=2)
    expected = whole.choices[0].logprobs.content
    assert [entry.token for entry in streamed] == [entry.token for entry in expected]
    assert [entry.logprob for entry in streamed] == pytest.approx([entry.logprob for entry in expected], abs=1e-4)


def test_logprobs_without_top_logprobs_lists_no_alternatives(client) -> None:
    reply = client.chat.completions.create(**GREEDY, logprobs=True)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert all(entry.top_logprobs == [] for entry in content)


def test_a_request_without_logprobs_gets_null_logprobs(client) -> None:
    reply = client.chat.completions.create(**GREEDY)
    assert reply.choices[0].logprobs is None
    stream = client.chat.completions.create(**GREEDY, stream=True)
    assert all(chunk.choices[0].logprobs is None for chunk in stream if chunk.choices)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"logprobs": 1}, "logprobs"),
    ],
)
def test_a_bad_logprobs_value_is_a_bad_request_naming_the_field(client, fields, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**GREEDY, **fields)
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"


def test_entries_survive_the_trip_from_a_generation_worker() -> None:
    alternative = TokenLogprob(40, "\\xe4", b"\xe4", -0.5)
    event = TokenEvent("r1", "", 3, (TokenLogprob(41, "<|im_end|>", b"<|im_end|>", -0.25, (alternative,)),))
    serializer = registry.get_serializer("msgpack")  # what the Redis channel layer sends
    message = serializer.deserialize(serializer.serialize(event_to_message(event)))
    assert event_from_message(message) == event
