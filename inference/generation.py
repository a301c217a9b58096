"""Generation jobs: one reply, keyed by its assistant message, independent of any socket.

A job reassembles the prompt from the database, streams the engine's deltas to the
conversation's group on the channel layer (each with a sequence number), flushes the
text to the database every ``INFERENCE_FLUSH_INTERVAL_MS`` and records how it ended.
It runs as an asyncio task in the web process (``INFERENCE_MODE=local``) or in a
generation worker (``manage.py runworker inference``, ``INFERENCE_MODE=remote``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from conversations import selectors, services
from conversations.models import Message
from inference import gateway, registry
from inference.engine.types import FinishEvent, SamplingParams, TokenEvent
from inference.gateway import PromptTooLongError

logger = logging.getLogger(__name__)

_tasks: set[asyncio.Task[None]] = set()
_running: dict[int, gateway.Stream] = {}


def conversation_group(conversation_id: uuid.UUID | str) -> str:
    return f"conversation.{conversation_id}"


@dataclass(frozen=True)
class JobContext:
    message_pk: int
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    spec: registry.ModelSpec | None
    model_name: str
    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int


def job_context_load(*, message_pk: int) -> JobContext | None:
    """Read everything the job needs from the database, or None if it is not streaming."""
    reply = Message.objects.select_related("conversation", "parent").filter(pk=message_pk).first()
    if reply is None or reply.status != Message.Status.STREAMING:
        return None
    conversation = reply.conversation
    history = selectors.message_path(leaf=reply.parent)
    chat = [{"role": m.role, "content": m.content} for m in history if m.content or m.role == "user"]
    if conversation.system_prompt.strip():
        chat.insert(0, {"role": "system", "content": conversation.system_prompt})
    return JobContext(
        message_pk=reply.pk,
        message_id=reply.public_id,
        conversation_id=conversation.public_id,
        spec=registry.model_get(reply.model_name),
        model_name=reply.model_name,
        messages=chat,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
    )


class JobFailed(Exception):
    """A reason for the user, shown in place of the reply."""


class GenerationJob:
    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.layer = get_channel_layer()
        self.group = conversation_group(context.conversation_id)
        self.text = ""
        self.seq = 0
        self.request_id = f"msg-{context.message_id}"

    async def send(self, payload: dict[str, Any]) -> None:
        try:
            await self.layer.group_send(self.group, {**payload, "message_id": str(self.context.message_id)})
        except Exception:  # the channel layer being down must not lose the reply
            logger.exception("Could not reach the channel layer for %s", self.group)

    async def run(self) -> None:
        finish: FinishEvent | None = None
        error = ""
        beat = asyncio.get_running_loop().create_task(self.beat())
        try:
            finish = await self.generate()
        except JobFailed as exc:
            error = str(exc)
        except Exception as exc:
            logger.exception("Generation failed for message %s", self.context.message_pk)
            error = f"The model failed while writing this reply ({type(exc).__name__})."
        finally:
            beat.cancel()
            await self.finish(finish, error)

    async def beat(self) -> None:
        """Tell other processes this job is alive, also while the model loads."""
        pause = max(1.0, settings.INFERENCE_STALE_AFTER_SECONDS / 4)
        while True:
            await database_sync_to_async(services.assistant_message_heartbeat)(message_pk=self.context.message_pk)
            await asyncio.sleep(pause)

    async def generate(self) -> FinishEvent:
        spec = self.context.spec
        if spec is None:
            raise JobFailed(f"The model {self.context.model_name!r} is no longer available; pick another in Settings.")
        try:
            stream = await gateway.open_stream(
                spec=spec,
                messages=self.context.messages,
                params=self.sampling_params(),
                request_id=self.request_id,
                cache_key=f"{self.context.conversation_id}:{spec.id}",
                local=True,
            )
        except PromptTooLongError as exc:
            raise JobFailed(str(exc)) from exc
        _running[self.context.message_pk] = stream
        await self.record_prompt(stream)
        if stream.fitted.dropped_messages:
            await database_sync_to_async(services.assistant_message_set_dropped_turns)(
                message_pk=self.context.message_pk, dropped_turns=stream.fitted.dropped_messages
            )
            await self.send({"type": "chat.trimmed", "dropped": stream.fitted.dropped_messages})
        return await self.relay(stream)

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.context.max_tokens, temperature=self.context.temperature)

    async def record_prompt(self, stream: gateway.Stream) -> None:
        """Keep the exact prompt and settings for the staff "inspect" view; never fails the reply."""
        served = getattr(stream, "served", None)
        if served is None:
            return
        try:
            await database_sync_to_async(services.generation_record_start)(
                message_pk=self.context.message_pk,
                model_name=self.context.model_name,
                tokenizer=served.loaded.tokenizer,
                fitted=stream.fitted,
                params=self.sampling_params(),
            )
        except Exception:
            logger.exception("Could not record the prompt of message %s", self.context.message_pk)

    async def relay(self, stream: gateway.Stream) -> FinishEvent:
        """Forward deltas to the group; flush to the database and check Stop on a timer."""
        interval = settings.INFERENCE_FLUSH_INTERVAL_MS / 1000
        last_flush = time.monotonic()
        try:
            while True:
                event = await stream.next_event(timeout=interval)
                if isinstance(event, FinishEvent):
                    return event
                if isinstance(event, TokenEvent) and event.text:
                    self.text += event.text
                    self.seq += 1
                    await self.send({"type": "chat.delta", "seq": self.seq, "text": event.text})
                if time.monotonic() - last_flush >= interval:
                    last_flush = time.monotonic()
                    if await database_sync_to_async(services.assistant_message_flush)(
                        message_pk=self.context.message_pk, content=self.text, seq=self.seq
                    ):
                        stream.cancel()
        finally:
            stream.cancel()

    async def finish(self, event: FinishEvent | None, error: str) -> None:
        _running.pop(self.context.message_pk, None)
        reason = event.finish_reason if event else "error"
        if event and event.error:
            error = error or f"The model failed while writing this reply: {event.error}"
        await database_sync_to_async(services.assistant_message_finish)(
            message_pk=self.context.message_pk,
            content=self.text,
            seq=self.seq,
            finish_reason=reason,
            prompt_tokens=event.prompt_tokens if event else None,
            completion_tokens=event.completion_tokens if event else None,
            error=error if reason == "error" else "",
        )
        if event is not None:
            await database_sync_to_async(services.generation_record_finish)(
                message_pk=self.context.message_pk,
                queue_seconds=event.queue_seconds,
                first_token_seconds=event.first_token_seconds,
                decode_seconds=event.decode_seconds,
            )
        await self.send({"type": "chat.finished"})


async def generation_run(*, message_pk: int) -> None:
    context = await database_sync_to_async(job_context_load)(message_pk=message_pk)
    if context is not None:
        await GenerationJob(context).run()


def generation_start_local(*, message_pk: int) -> None:
    """Run the job as a task on this process's event loop; it outlives the socket."""
    task = asyncio.get_running_loop().create_task(generation_run(message_pk=message_pk))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def generation_dispatch(*, message_pk: int) -> None:
    if settings.INFERENCE_MODE == "remote":
        await get_channel_layer().send(settings.INFERENCE_CHANNEL, {"type": "generate", "message_pk": message_pk})
    else:
        generation_start_local(message_pk=message_pk)


def generation_cancel_local(*, message_pk: int) -> None:
    """Stop at once if the job runs here; other processes see the database flag."""
    stream = _running.get(message_pk)
    if stream is not None:
        stream.cancel()


async def generation_wait_idle(timeout: float = 30.0) -> None:
    """Wait for this process's jobs to finish (tests and graceful shutdown)."""
    if _tasks:
        await asyncio.wait_for(asyncio.gather(*list(_tasks), return_exceptions=True), timeout)
