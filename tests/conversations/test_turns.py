"""Starting a turn: what is stored, what is refused, and how a reply ends."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from conversations import selectors, services
from conversations.models import Conversation, Message
from tests.conversations.factories import finished_turn


def test_a_new_conversation_takes_the_defaults(chat, settings) -> None:
    assert chat.model_name == "tiny-llama"
    assert chat.system_prompt == settings.INFERENCE_DEFAULT_SYSTEM_PROMPT
    assert chat.temperature == settings.INFERENCE_DEFAULT_TEMPERATURE
    assert chat.max_tokens == settings.INFERENCE_DEFAULT_MAX_TOKENS
    assert chat.frequency_penalty == settings.INFERENCE_DEFAULT_FREQUENCY_PENALTY == 0.1


def test_it_saves_the_user_message_and_a_streaming_reply(chat) -> None:
    turn = services.turn_start(conversation=chat, text="  Hello there  ")
    assert turn.user_message.content == "Hello there"
    assert turn.assistant_message.status == Message.Status.STREAMING
    assert turn.assistant_message.parent == turn.user_message
    chat.refresh_from_db()
    assert chat.active_leaf == turn.assistant_message


def test_the_title_comes_from_the_first_message(chat) -> None:
    services.turn_start(conversation=chat, text="How do\nI bake bread " + "at home " * 20)
    chat.refresh_from_db()
    assert chat.title.startswith("How do I bake bread at home")
    assert len(chat.title) <= 60 and chat.title.endswith("…")


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "Type a message"), ("   \n ", "Type a message"), ("x" * 8001, "limit is 8,000"), (42, "must be text")],
)
def test_it_refuses_bad_messages_and_stores_nothing(chat, text, reason) -> None:
    with pytest.raises(ValidationError, match=reason):
        services.turn_start(conversation=chat, text=text)
    assert Message.objects.count() == 0
    chat.refresh_from_db()
    assert chat.title == ""


def test_it_refuses_a_second_message_while_a_reply_streams(chat) -> None:
    services.turn_start(conversation=chat, text="first")
    with pytest.raises(ValidationError, match="Wait for the current reply"):
        services.turn_start(conversation=chat, text="second")
    assert Message.objects.filter(role="user").count() == 1


def test_finishing_records_reason_and_token_counts(chat) -> None:
    reply = services.turn_start(conversation=chat, text="hi").assistant_message
    assert services.assistant_message_finish(
        message_pk=reply.pk, content="Hello!", seq=3, finish_reason="length", prompt_tokens=12, completion_tokens=3
    )
    reply.refresh_from_db()
    assert (reply.status, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens) == (
        "complete",
        "length",
        12,
        3,
    )
    assert not services.assistant_message_finish(
        message_pk=reply.pk, content="", seq=0, finish_reason="stop", prompt_tokens=0, completion_tokens=0
    ), "a finished reply cannot be finished again"
    reply.refresh_from_db()
    assert reply.content == "Hello!"


def test_an_error_keeps_the_conversation_usable(chat) -> None:
    reply = services.turn_start(conversation=chat, text="hi").assistant_message
    services.assistant_message_finish(
        message_pk=reply.pk,
        content="",
        seq=0,
        finish_reason="error",
        prompt_tokens=None,
        completion_tokens=None,
        error="The model failed.",
    )
    reply.refresh_from_db()
    assert reply.status == "error" and reply.error == "The model failed."
    services.turn_start(conversation=chat, text="again")
    texts = [m.content for m in selectors.conversation_active_messages(conversation=chat)]
    assert texts == ["hi", "", "again", ""]


def test_stop_flags_only_a_streaming_reply(chat) -> None:
    reply = services.turn_start(conversation=chat, text="hi").assistant_message
    assert services.assistant_message_request_cancel(message=reply)
    assert services.assistant_messages_flush(texts={reply.pk: ("partial", 1)}, live=[reply.pk]) == {reply.pk}
    services.assistant_message_finish(
        message_pk=reply.pk, content="partial", seq=1, finish_reason="cancelled", prompt_tokens=5, completion_tokens=1
    )
    assert not services.assistant_message_request_cancel(message=reply)


def test_the_streamed_text_of_many_replies_is_saved_together(alice, settings, django_assert_max_num_queries) -> None:
    settings.CHAT_MAX_CONCURRENT_STREAMS = settings.INFERENCE_MAX_STREAMS_PER_USER = 20
    replies = [
        services.turn_start(conversation=services.conversation_create(owner=alice), text=f"q{index}").assistant_message
        for index in range(20)
    ]
    stopped = replies[0]
    services.assistant_message_request_cancel(message=stopped)
    texts = {reply.pk: (f"text of {reply.pk}", 3) for reply in replies}
    with django_assert_max_num_queries(6):  # not one per reply
        stop = services.assistant_messages_flush(texts=texts, live=list(texts), beat=list(texts))
    assert stop == {stopped.pk}, "Stop pressed: its job is told to stop"
    saved = {m.pk: m for m in Message.objects.filter(pk__in=texts)}
    assert all(saved[reply.pk].content == f"text of {reply.pk}" for reply in replies[1:])
    assert all(saved[reply.pk].stream_seq == 3 and saved[reply.pk].heartbeat_at for reply in replies[1:])
    assert saved[stopped.pk].content == "", "a stopped reply's text is left to its job's finish"


def test_rename_and_delete(chat) -> None:
    services.conversation_rename(conversation=chat, title="  Bread   notes ")
    assert Conversation.objects.get().title == "Bread notes"
    with pytest.raises(ValidationError):
        services.conversation_rename(conversation=chat, title="   ")
    services.conversation_delete(conversation=chat)
    assert not Conversation.objects.exists()


def test_the_list_is_newest_first_and_only_mine(alice, bob) -> None:
    first = services.conversation_create(owner=alice)
    second = services.conversation_create(owner=alice)
    services.conversation_create(owner=bob)
    services.turn_start(conversation=first, text="bump")
    assert list(selectors.conversation_list(owner=alice)) == [first, second]


def test_settings_refuse_an_unknown_model(chat) -> None:
    with pytest.raises(ValidationError, match="not available"):
        services.conversation_update_settings(
            conversation=chat, model_name="gpt-9", system_prompt="", temperature=0.5, max_tokens=10
        )


def test_messages_per_minute_are_limited(chat, settings) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 3
    for index in range(3):
        reply = services.turn_start(conversation=chat, text=f"message {index}").assistant_message
        services.assistant_message_finish(
            message_pk=reply.pk, content="ok", seq=1, finish_reason="stop", prompt_tokens=1, completion_tokens=1
        )
    with pytest.raises(ValidationError, match="3 messages a minute"):
        services.turn_start(conversation=chat, text="one too many")
    assert Message.objects.filter(role="user").count() == 3, "the refused message is not stored"


def test_concurrent_streams_per_user_are_limited(alice, settings) -> None:
    settings.CHAT_MAX_CONCURRENT_STREAMS = 2
    chats = [services.conversation_create(owner=alice) for _ in range(3)]
    services.turn_start(conversation=chats[0], text="one")
    services.turn_start(conversation=chats[1], text="two")
    with pytest.raises(ValidationError, match="already have 2 replies being written"):
        services.turn_start(conversation=chats[2], text="three")
    assert not chats[2].messages.exists()


def test_a_refusal_for_too_many_streams_names_the_conversations_holding_them(alice, settings) -> None:
    settings.CHAT_MAX_CONCURRENT_STREAMS = 2
    trip, bread, third = (services.conversation_create(owner=alice) for _ in range(3))
    services.turn_start(conversation=trip, text="Plan the trip")
    services.turn_start(conversation=bread, text="Bake bread")
    with pytest.raises(ValidationError) as refused:
        services.turn_start(conversation=third, text="three")
    assert refused.value.messages == [
        "You already have 2 replies being written (in “Bake bread”, “Plan the trip”); "
        "wait for one to finish or stop it."
    ]


def test_a_turn_reads_its_history_in_a_fixed_number_of_queries(chat, settings, django_assert_max_num_queries) -> None:
    from conversations.generation import job_context_load

    settings.CHAT_MESSAGES_PER_MINUTE = 100
    for index in range(30):
        finished_turn(chat, f"Question {index}", f"Answer {index}")
    turn = services.turn_start(conversation=chat, text="And the last one?")
    with django_assert_max_num_queries(3):  # not one per earlier message
        context = job_context_load(message_pk=turn.assistant_message.pk)
    assert context is not None
    expected = [text for index in range(30) for text in (f"Question {index}", f"Answer {index}")]
    assert [m["content"] for m in context.messages if m["role"] != "system"] == [*expected, "And the last one?"]
