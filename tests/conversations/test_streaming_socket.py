"""The conversation websocket: streaming, ownership, stop, reconnect, escaping."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = [f"word{index} " for index in range(60)]


async def reply_of(chat) -> Message:
    return await Message.objects.filter(conversation=chat, role="assistant").alatest("created_at")


async def test_it_streams_a_reply_from_the_tiny_model(alice, chat) -> None:
    # Greedy, so the reply is the same every run: sampling from random weights now and
    # then drew the end-of-turn token first and made a one-piece reply.
    await database_sync_to_async(services.conversation_update_settings)(
        conversation=chat, model_name=chat.model_name, system_prompt="", temperature=0.0, max_tokens=40
    )
    connected, _, socket = await open_socket(alice, chat)
    assert connected
    await socket.send({"action": "send", "message": "Hello there"})
    message_id = await socket.until_finished(timeout=60)
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert socket.finished[message_id] == "complete"
    assert socket.delta_count >= 5, "the reply arrived in pieces, not at once"
    assert socket.texts[message_id] == reply.content
    assert reply.finish_reason in {"stop", "length"}
    assert reply.prompt_tokens and reply.prompt_tokens > 10
    assert reply.completion_tokens and reply.completion_tokens >= socket.delta_count
    assert reply.stream_seq == socket.delta_count
    await socket.close()


async def test_it_checks_ownership(alice, bob, chat) -> None:
    connected, code, _ = await open_socket(bob, chat)
    assert not connected and code == 4404
    connected, code, _ = await open_socket(None, chat)
    assert not connected and code == 4404


async def test_it_refuses_a_foreign_origin(alice, chat) -> None:
    connected, _, _ = await open_socket(alice, chat, origin="http://evil.example")
    assert not connected


async def test_it_keeps_the_partial_reply_on_stop(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(WORDS, delay=0.03))
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Tell me a long story"})
    await socket.until_deltas(3)
    await socket.send({"action": "stop"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert reply.finish_reason == "cancelled" and reply.status == "complete"
    assert reply.content.startswith("word0 word1 word2 ")
    assert 3 <= len(reply.content.split()) < len(WORDS)
    assert socket.texts[message_id] == reply.content
    await socket.close()


async def test_closing_the_tab_neither_stops_nor_loses_the_reply(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(WORDS[:30], delay=0.02))
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Count for me"})
    await socket.until_deltas(2)
    await socket.close()
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert reply.content == "".join(WORDS[:30])
    assert reply.finish_reason == "stop"


async def test_a_reconnecting_tab_resumes_without_gaps_or_repeats(alice, chat, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine(WORDS[:40], delay=0.01, hold_after=20))
    _, _, first = await open_socket(alice, chat)
    await first.send({"action": "send", "message": "Count for me"})
    await first.until_deltas(3)
    await first.close()
    # Deltas keep flowing while no tab is open, up to the hold; the reply is still
    # streaming when the second tab opens, and goes on once it has.
    assert await asyncio.to_thread(engine.holding.wait, 10)
    _, _, second = await open_socket(alice, chat)
    snapshot_frame = await second.receive()
    assert "is-streaming" in snapshot_frame, "the reconnected tab first shows what was generated so far"
    engine.release.set()
    message_id = await second.until_finished()
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert reply.content == "".join(WORDS[:40])
    # Rebuilt from the snapshot plus live deltas, exactly as a browser would show it.
    assert second.texts[message_id] == reply.content
    await second.close()


async def test_two_tabs_both_see_the_stream(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(WORDS[:10], delay=0.02))
    _, _, tab1 = await open_socket(alice, chat)
    _, _, tab2 = await open_socket(alice, chat)
    await tab1.send({"action": "send", "message": "hello"})
    message_id = await tab1.until_finished()
    await tab2.until_finished(message_id)
    await generation_wait_idle()
    assert tab1.texts[message_id] == tab2.texts[message_id] == "".join(WORDS[:10])
    assert "hello" in "".join(tab2.frames), "the other tab shows the user's message too"
    await tab1.close()
    await tab2.close()


async def test_a_delta_holding_script_reaches_the_browser_escaped(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(["<script>alert(1)</script>", " and <img src=x onerror=alert(2)>"], delay=0.01))
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "be evil"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    deltas = [frame for frame in socket.frames if "beforeend:#m-" in frame]
    assert deltas and all("<script" not in frame and "<img" not in frame for frame in deltas)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in deltas[0]
    final = socket.frames[-1]
    assert "<script" not in final and "<img" not in final, "the final Markdown is sanitized too"
    assert socket.texts[message_id].startswith("<script>alert(1)</script>")
    await socket.close()


async def test_bad_input_is_refused_with_a_visible_message(alice, chat) -> None:
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "   "})
    await socket.receive()
    await socket.send({"action": "send", "message": "x" * 9000})
    await socket.receive()
    await socket.communicator.send_to(text_data="this is not json")
    await socket.receive()
    await socket.send({"action": "dance"})
    await socket.receive()
    assert socket.errors[0] == "Type a message before sending."
    assert "the limit is 8,000" in socket.errors[1]
    assert "could not be read" in socket.errors[2]
    assert socket.errors[3] == "Unknown action."
    assert await Message.objects.filter(conversation=chat).acount() == 0
    await socket.close()


async def test_a_generation_error_is_shown_and_the_chat_stays_usable(alice, chat, scripted_engine) -> None:
    scripted_engine(ScriptedEngine(WORDS[:10], delay=0.01, fail_after=2))
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "please fail"})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert socket.finished[message_id] == "error"
    assert reply.status == "error" and "scripted failure" in reply.error
    assert reply.content == "word0 word1 ", "the partial text is kept"
    assert "msg-error" in socket.frames[-2] + socket.frames[-1]
    scripted_engine(ScriptedEngine(["fine"], delay=0.01))
    await socket.send({"action": "send", "message": "try again"})
    await socket.until(lambda: len(socket.finished) >= 2)
    await generation_wait_idle()
    assert (await reply_of(chat)).content == "fine"
    await socket.close()


async def test_an_unavailable_model_fails_with_a_reason(alice, chat) -> None:
    chat.model_name = "retired-model"
    await chat.asave()
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "hello"})
    await socket.until_finished()
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert reply.status == Message.Status.ERROR
    assert reply.error == "The model retired-model is not available to you any more; pick another in Settings."
    await socket.close()


async def test_the_chat_says_when_old_turns_were_left_out(alice, chat, settings) -> None:
    # The tiny model has a 512-token window; seven long turns cannot all fit.
    await database_sync_to_async(_long_history)(chat, turns=7)
    chat.max_tokens = 16
    await chat.asave()
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "and now?"})
    await socket.until_finished(timeout=60)
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert reply.dropped_turns > 0
    shown = "".join(socket.frames)
    assert f"{reply.dropped_turns} earlier messages were left out" in shown
    await socket.close()


def _long_history(chat, *, turns: int) -> None:
    for index in range(turns):
        reply = services.turn_start(conversation=chat, text=f"question {index} " + "q" * 80).assistant_message
        services.assistant_message_finish(
            message_pk=reply.pk, content="a" * 80, seq=1, finish_reason="stop", prompt_tokens=1, completion_tokens=1
        )


async def test_a_reply_started_twice_in_one_process_runs_once_and_completes(alice, chat, scripted_engine) -> None:
    from conversations.generation import generation_start_local

    engine = scripted_engine(ScriptedEngine(WORDS[:6], delay=0.01))
    turn = await database_sync_to_async(services.turn_start)(conversation=chat, text="once")
    pk = turn.assistant_message.pk
    generation_start_local(message_pk=pk)
    generation_start_local(message_pk=pk)  # a channel layer delivering "generate" twice
    await generation_wait_idle()
    reply = await reply_of(chat)
    assert (reply.status, reply.content) == ("complete", "".join(WORDS[:6]))
    assert len(engine.requests) == 1
