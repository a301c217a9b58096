"""Chat completions through the official openai client against a live server (tiny model)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.api.conftest import TINY_MODEL_ID

HELLO = [{"role": "user", "content": "Hello there"}]


def test_it_answers_with_a_completion_and_usage(client) -> None:
    reply = client.chat.completions.create(model=TINY_MODEL_ID, messages=HELLO, max_tokens=8, seed=1)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == TINY_MODEL_ID
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_it_streams_deltas_then_the_finish_reason_then_usage(client) -> None:
    stream = client.chat.completions.create(
        model=TINY_MODEL_ID,
        messages=HELLO,
        max_tokens=6,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    choice_chunks = [chunk for chunk in chunks if chunk.choices]
    assert all(chunk.choices[0].finish_reason is None for chunk in choice_chunks[:-1])
    assert choice_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 6
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in choice_chunks)
    whole = client.chat.completions.create(model=TINY_MODEL_ID, messages=HELLO, max_tokens=6, seed=3)
    assert streamed == whole.choices[0].message.content


def test_the_raw_stream_is_unbuffered_sse_ending_with_done(api_server, alice_key) -> None:
    body = {"model": TINY_MODEL_ID, "messages": HELLO, "max_tokens": 4, "stream": True}
    request = urllib.request.Request(
        f"{api_server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {alice_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in first  # only present when stream_options.include_usage asks for it


def _reply_with_a_letter_inside(client, settings: dict) -> tuple[dict, str, str]:
    """A seeded reply of the tiny model with a letter past its start, to stop on."""
    for seed in range(30):
        text = client.chat.completions.create(**settings, seed=seed).choices[0].message.content
        letters = [char for char in text[4:] if char.isascii() and char.isalnum()]
        if letters:
            return {**settings, "seed": seed}, text, letters[0]
    raise AssertionError("the tiny model wrote no letters for 30 seeds")


def test_it_leaves_stop_strings_out_of_the_reply(client) -> None:
    base = {"model": TINY_MODEL_ID, "messages": HELLO, "max_tokens": 40, "temperature": 1.0}
    settings, text, stop = _reply_with_a_letter_inside(client, base)
    stopped = client.chat.completions.create(**settings, stop=[stop, "never-appears"])
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stop not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_max_tokens_ends_the_reply_with_length(client) -> None:
    reply = client.chat.completions.create(model=TINY_MODEL_ID, messages=HELLO, max_completion_tokens=3, seed=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_the_same_seed_gives_the_same_reply(client) -> None:
    def ask(seed: int) -> str:
        reply = client.chat.completions.create(
            model=TINY_MODEL_ID, messages=HELLO, max_tokens=12, temperature=1.0, seed=seed
        )
        return reply.choices[0].message.content

    assert ask(42) == ask(42)
    assert ask(42) != ask(43)


def test_penalties_steer_the_reply_away_from_tokens_it_already_used(client) -> None:
    def ask(**penalties: float) -> str:
        reply = client.chat.completions.create(
            model=TINY_MODEL_ID, messages=HELLO, max_tokens=40, temperature=0, **penalties
        )
        return reply.choices[0].message.content

    plain, penalized = ask(), ask(frequency_penalty=2.0, presence_penalty=1.0)
    assert penalized != plain
    assert len(set(penalized)) > len(set(plain)), "more distinct characters (the tiny model's tokens are bytes)"
    assert ask(frequency_penalty=0, presence_penalty=0) == plain


def test_n_gives_several_different_choices(client) -> None:
    reply = client.chat.completions.create(model=TINY_MODEL_ID, messages=HELLO, max_tokens=10, n=3, seed=9)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in reply.choices}) > 1
    assert reply.usage.completion_tokens >= len(reply.choices)


def test_it_reads_system_developer_and_text_part_messages(client) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi, "}, {"type": "text", "text": "who are you?"}]},
        {"role": "assistant", "content": "A model."},
        {"role": "user", "content": "Say more."},
    ]
    reply = client.chat.completions.create(model=TINY_MODEL_ID, messages=messages, max_tokens=4)
    assert reply.usage.prompt_tokens > 20


def test_a_bad_key_is_an_authentication_error(api_server) -> None:
    bad = openai.OpenAI(base_url=api_server.base_url, api_key="pk-not-a-real-key-0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=TINY_MODEL_ID, messages=HELLO)
    assert caught.value.status_code == 401
    assert "Incorrect API key" in caught.value.message


def test_a_revoked_key_stops_working_at_once(api_server) -> None:
    key = api_server.new_key("alice", "soon revoked")
    keyed = openai.OpenAI(base_url=api_server.base_url, api_key=key, max_retries=0)
    assert keyed.models.list().data
    api_server.shell(
        "from api.models import ApiKey; from api.keys.services import api_key_revoke;"
        "api_key_revoke(api_key=ApiKey.objects.get(name='soon revoked'))"
    )
    with pytest.raises(openai.AuthenticationError):
        keyed.models.list()


def test_an_unknown_model_is_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.body["param"] == "model"
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": []}, "messages"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"n": 2, "stream": True}, "n"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
    ],
)
def test_a_bad_field_is_a_bad_request_that_names_it(client, fields, param) -> None:
    body = {"model": TINY_MODEL_ID, "messages": HELLO, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"


def test_an_unknown_argument_is_refused_by_name(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TINY_MODEL_ID, messages=HELLO, extra_body={"temprature": 1})
    assert "temprature" in caught.value.message


def test_a_body_over_the_limit_is_refused_as_too_large(api_server, alice_key) -> None:
    huge = json.dumps({"model": TINY_MODEL_ID, "messages": [{"role": "user", "content": "x" * 1_100_000}]})
    status, body = api_server.post_raw(alice_key, "/chat/completions", huge.encode())
    assert status == 413
    assert "larger than the limit" in body["error"]["message"]


def test_malformed_json_is_a_readable_400(api_server, alice_key) -> None:
    status, body = api_server.post_raw(alice_key, "/chat/completions", b'{"model": ')
    assert status == 400
    assert body["error"]["message"].startswith("The request body is not valid JSON")


def test_unknown_api_paths_answer_in_the_api_shape(api_server, alice_key) -> None:
    request = urllib.request.Request(
        f"{api_server.base_url}/nothing/here", headers={"Authorization": f"Bearer {alice_key}"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 404
    assert json.loads(caught.value.read())["error"]["type"] == "invalid_request_error"


def test_store_keeps_a_transcript_for_the_keys_user_only(client, api_server) -> None:
    marker = "Remember the pelican"
    reply = client.chat.completions.create(
        model=TINY_MODEL_ID,
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": marker}],
        max_tokens=5,
        store=True,
    )
    stored = api_server.shell(
        "import json; from conversations.models import Conversation;"
        f"c = Conversation.objects.get(title={marker!r});"
        "print(json.dumps({'owner': c.owner.username, 'source': c.source, 'system': c.system_prompt,"
        "'messages': [[m.role, m.content] for m in c.messages.order_by('id')]}))"
    )
    assert stored["owner"] == "alice"
    assert stored["source"] == "api"
    assert stored["system"] == "Be kind."
    assert stored["messages"] == [["user", marker], ["assistant", reply.choices[0].message.content]]
    unstored = client.chat.completions.create(
        model=TINY_MODEL_ID, messages=[{"role": "user", "content": "Forget me"}], max_tokens=2
    )
    assert unstored.choices
    assert (
        api_server.shell(
            "from conversations.models import Conversation; print(Conversation.objects.filter(title='Forget me').count())"
        )
        == 0
    )


def test_a_streamed_completion_can_be_stored_too(client, api_server) -> None:
    stream = client.chat.completions.create(
        model=TINY_MODEL_ID,
        messages=[{"role": "user", "content": "Stream and store"}],
        max_tokens=4,
        stream=True,
        store=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    stored = api_server.shell(
        "import json; from conversations.models import Conversation;"
        "c = Conversation.objects.get(title='Stream and store');"
        "print(json.dumps([c.owner.username, c.messages.get(role='assistant').content]))"
    )
    assert stored == ["alice", text]
