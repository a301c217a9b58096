"""Generation jobs: one reply, keyed by its assistant message, independent of any socket.

A job reassembles the prompt from the database, streams the engine's deltas to the
conversation's group on the channel layer (each with a sequence number), flushes the
text to the database every ``INFERENCE_FLUSH_INTERVAL_MS`` (one ``StreamWriter`` per
process stores all replies in one call a tick) and records how it ended, retrying while
the database refuses writes (``GenerationJob.store_ending``).
It runs as an asyncio task in the web process (``INFERENCE_MODE=local``) or in a
generation worker (``manage.py runworker inference``, ``INFERENCE_MODE=remote``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError

from conversations import selectors, services
from conversations.models import Message
from inference import gateway, registry
from inference.engine.prompt import CONTINUE, FittedPrompt
from inference.engine.types import FinishEvent, SamplingParams, TokenEvent
from inference.gateway import EngineBusyError, PromptTooLongError

if TYPE_CHECKING:
    from conversations.apps import ConversationsConfig

logger = logging.getLogger(__name__)

# Backoff between tries to store a finished reply (see GenerationJob.store_ending).
FINISH_RETRY_FIRST_DELAY = 0.05
FINISH_RETRY_MAX_DELAY = 2.0


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
    frequency_penalty: float = 0.0
    top_p: float = 1.0
    # A continued reply (services.reply_continue): its text, sequence number and tokens so far.
    prefix: str = ""
    prefix_seq: int = 0
    prefix_tokens: int = 0


def job_context_load(*, message_pk: int) -> JobContext | None:
    """Read everything the job needs from the database, or None if it is not streaming."""
    reply = Message.objects.select_related("conversation", "parent").filter(pk=message_pk).first()
    if reply is None or reply.status != Message.Status.STREAMING:
        return None
    conversation = reply.conversation
    history = selectors.message_path(leaf=reply.parent)
    chat = selectors.prompt_turns(history=history)
    if conversation.system_prompt.strip():
        chat.insert(0, {"role": "system", "content": conversation.system_prompt})
    if reply.content:  # continuing: the model goes on from its own text
        chat.append({"role": "assistant", "content": reply.content, CONTINUE: "yes"})
    return JobContext(
        message_pk=reply.pk,
        message_id=reply.public_id,
        conversation_id=conversation.public_id,
        spec=registry.model_get(reply.model_name),
        model_name=reply.model_name,
        messages=chat,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
        frequency_penalty=conversation.frequency_penalty,
        top_p=conversation.top_p,
        prefix=reply.content,
        prefix_seq=reply.stream_seq if reply.content else 0,
        prefix_tokens=(reply.completion_tokens or 0) if reply.content else 0,
    )


class JobFailed(Exception):
    """A reason for the user, shown in place of the reply."""


class GenerationJob:
    def __init__(self, context: JobContext, *, jobs: LocalJobs) -> None:
        self.context = context
        self.jobs = jobs
        self.layer = get_channel_layer()
        self.group = conversation_group(context.conversation_id)
        self.text = context.prefix
        self.seq = context.prefix_seq
        # A continued reply is a new request for the engine, which refuses a repeated id.
        self.request_id = f"msg-{context.message_id}" + (f"-{context.prefix_seq}" if context.prefix_seq else "")
        self.stream: gateway.Stream | None = None
        self.stop_requested = False
        # What the stream writer has yet to store for this job (see StreamWriter).
        self.flushed_seq = context.prefix_seq
        self.beaten_at = -math.inf
        self.record: PromptRecord | None = None
        self.record_write: asyncio.Task[None] | None = None

    async def send(self, payload: dict[str, Any]) -> None:
        try:
            await self.layer.group_send(self.group, {**payload, "message_id": str(self.context.message_id)})
        except Exception:  # the channel layer being down must not lose the reply
            logger.exception("Could not reach the channel layer for %s", self.group)

    async def run(self) -> None:
        finish: FinishEvent | None = None
        error = ""
        writer = self.jobs.writer()
        writer.add(self)  # from now on its text is saved and its heartbeat beats, also while the model loads
        try:
            finish = await self.generate()
        except JobFailed as exc:
            error = str(exc)
        except Exception as exc:
            logger.exception("Generation failed for message %s", self.context.message_pk)
            error = f"The model failed while writing this reply ({type(exc).__name__})."
        finally:
            try:
                await self.finish(finish, error)
            finally:  # its heartbeat beats until the end is stored, so no reaper takes it meanwhile
                writer.discard(self)

    def stop(self) -> None:
        """Stop was pressed or the reply already ended elsewhere: end the stream, keep the text."""
        self.stop_requested = True
        if self.stream is not None:
            self.stream.cancel()

    async def generate(self) -> FinishEvent:
        spec = self.context.spec
        if spec is None:
            raise JobFailed(registry.model_gone(self.context.model_name))
        try:
            stream = await gateway.open_stream(
                spec=spec,
                messages=self.context.messages,
                params=self.sampling_params(),
                request_id=self.request_id,
                cache_key=f"{self.context.conversation_id}:{spec.id}",
                local=True,
            )
        except (PromptTooLongError, EngineBusyError) as exc:
            raise JobFailed(str(exc)) from exc
        self.jobs.streams[self.context.message_pk] = self.stream = stream
        if self.stop_requested:
            stream.cancel()
        self.record_prompt(stream)
        dropped, cut = stream.fitted.dropped_messages, stream.fitted.cut_chars
        if dropped or cut:
            await database_sync_to_async(services.assistant_message_set_dropped_turns)(
                message_pk=self.context.message_pk, dropped_turns=dropped, attachment_cut_chars=cut
            )
            await self.send({"type": "chat.trimmed", "dropped": dropped, "cut": cut})
        return await self.relay(stream)

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.context.max_tokens,
            temperature=self.context.temperature,
            top_p=self.context.top_p,
            frequency_penalty=self.context.frequency_penalty,
        )

    def record_prompt(self, stream: gateway.Stream) -> None:
        """Keep the exact prompt and settings for the staff "inspect" view (the stream
        writer stores it with its next tick; it never fails the reply)."""
        served = getattr(stream, "served", None)
        if served is not None:
            self.record = PromptRecord(
                message_pk=self.context.message_pk,
                model_name=self.context.model_name,
                tokenizer=served.loaded.tokenizer,
                fitted=stream.fitted,
                params=self.sampling_params(),
            )

    async def relay(self, stream: gateway.Stream) -> FinishEvent:
        """Forward deltas to the group; the stream writer saves the text and relays Stop."""
        try:
            while True:
                event = await stream.next_event()
                if isinstance(event, FinishEvent):
                    return event
                if isinstance(event, TokenEvent) and event.text:
                    self.text += event.text
                    self.seq += 1
                    await self.send({"type": "chat.delta", "seq": self.seq, "text": event.text})
        finally:
            stream.cancel()

    async def finish(self, event: FinishEvent | None, error: str) -> None:
        self.jobs.streams.pop(self.context.message_pk, None)
        reason = event.finish_reason if event else "error"
        if event and event.error:
            error = error or f"The model failed while writing this reply: {event.error}"
        if self.record_write is not None:  # a tick is storing the prompt: the timings update that row
            await asyncio.wait([self.record_write])
        record, self.record = self.record, None
        stored = await self.store_ending(
            record=record,
            message_pk=self.context.message_pk,
            content=self.text,
            seq=self.seq,
            finish_reason=reason,
            event=event,
            error=error if reason == "error" else "",
            prefix_tokens=self.context.prefix_tokens,
            weights=self.stream.weights if self.stream is not None else "",
        )
        await self.send({"type": "chat.finished" if stored else "chat.unsaved"})

    async def store_ending(self, **ending: Any) -> bool:
        """Store how the reply ended, retrying with backoff while the database refuses
        (SQLite busy past its timeout, PostgreSQL restarting); the text waits in memory.

        False, and the user is told, only after ``INFERENCE_FINISH_RETRY_SECONDS``.
        """
        deadline = time.monotonic() + settings.INFERENCE_FINISH_RETRY_SECONDS
        delay = FINISH_RETRY_FIRST_DELAY
        while True:
            try:
                await database_sync_to_async(_job_end)(**ending)
                return True
            except DatabaseError:
                if time.monotonic() + delay > deadline:
                    logger.exception("Gave up storing the end of message %s", self.context.message_pk)
                    return False
                logger.warning("Could not store the end of message %s; retrying", self.context.message_pk)
                await asyncio.sleep(delay)
                delay = min(2 * delay, FINISH_RETRY_MAX_DELAY)


@dataclass(frozen=True)
class PromptRecord:
    """The arguments of ``services.generation_record_start`` for one reply."""

    message_pk: int
    model_name: str
    tokenizer: Any
    fitted: FittedPrompt
    params: SamplingParams

    def store(self) -> None:
        try:
            services.generation_record_start(
                message_pk=self.message_pk,
                model_name=self.model_name,
                tokenizer=self.tokenizer,
                fitted=self.fitted,
                params=self.params,
            )
        except Exception:
            logger.exception("Could not record the prompt of message %s", self.message_pk)


def _job_end(
    *, record: PromptRecord | None, message_pk: int, event: FinishEvent | None, prefix_tokens: int, **ending: Any
) -> None:
    """Record how a reply ended, in one trip to the database thread."""
    if record is not None:
        record.store()
    services.assistant_message_finish(
        message_pk=message_pk,
        prompt_tokens=event.prompt_tokens if event else None,
        completion_tokens=prefix_tokens + event.completion_tokens if event else None,
        first_token_seconds=event.first_token_seconds if event else None,
        decode_seconds=event.decode_seconds if event else None,
        # The model finished, so its worker is alive: a reaper that failed the reply
        # while the database kept its heartbeat out was wrong, and the whole text wins.
        reclaim_reaped=ending["finish_reason"] in (Message.FinishReason.STOP, Message.FinishReason.LENGTH),
        **ending,
    )
    if event is not None:
        services.generation_record_finish(
            message_pk=message_pk,
            queue_seconds=event.queue_seconds,
            first_token_seconds=event.first_token_seconds,
            decode_seconds=event.decode_seconds,
        )


def _tick_write(
    *, texts: dict[int, tuple[str, int]], live: list[int], beat: list[int], records: list[PromptRecord]
) -> set[int]:
    """One tick of the stream writer, in one trip to the database thread."""
    for record in records:
        record.store()
    return services.assistant_messages_flush(texts=texts, live=live, beat=beat)


class StreamWriter:
    """Stores every reply streaming on this event loop, in one database call a tick.

    Each tick (``INFERENCE_FLUSH_INTERVAL_MS``) writes the text of the replies that
    grew, the prompts of replies that started, and the heartbeats that are due
    (every ``INFERENCE_STALE_AFTER_SECONDS / 4``), then stops the jobs whose reply
    was stopped or has already ended. Jobs that each flushed on their own timer
    sent a hundred queries every 300 ms through Channels' one database thread, where
    new turns queued behind them (docs/performance.md).
    """

    def __init__(self) -> None:
        self.jobs: dict[int, GenerationJob] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, job: GenerationJob) -> None:
        self.jobs[job.context.message_pk] = job
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    def discard(self, job: GenerationJob) -> None:
        self.jobs.pop(job.context.message_pk, None)

    async def run(self) -> None:
        interval = settings.INFERENCE_FLUSH_INTERVAL_MS / 1000
        while self.jobs:
            await asyncio.sleep(interval)
            tick = asyncio.get_running_loop().create_task(self.write())
            await asyncio.wait([tick])

    async def write(self) -> None:
        """1. Take what is due from each job. 2. Store it in one call. 3. Stop the jobs told to."""
        jobs = list(self.jobs.values())
        now = time.monotonic()
        beat_every = max(1.0, settings.INFERENCE_STALE_AFTER_SECONDS / 4)
        texts = {job.context.message_pk: (job.text, job.seq) for job in jobs if job.seq != job.flushed_seq}
        beat = {job for job in jobs if now - job.beaten_at >= beat_every}
        records = [job.record for job in jobs if job.record is not None]
        for job in jobs:
            if job.record is not None:
                job.record, job.record_write = None, asyncio.current_task()
        try:
            stop = await database_sync_to_async(_tick_write)(
                texts=texts,
                live=[job.context.message_pk for job in jobs],
                beat=[job.context.message_pk for job in beat],
                records=records,
            )
        except Exception:  # the next tick tries again; the job's finish stores the final text
            logger.exception("Could not store the streaming replies")
            return
        for job in jobs:
            pk = job.context.message_pk
            job.flushed_seq = texts[pk][1] if pk in texts else job.flushed_seq
            job.beaten_at = now if job in beat else job.beaten_at
            if pk in stop:
                job.stop()


class LocalJobs:
    """The reply jobs running in this process: each one's task and open stream (by its
    message's pk), and each event loop's stream writer. One per process, made when the
    app is ready (``local_jobs()``)."""

    def __init__(self) -> None:
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.streams: dict[int, gateway.Stream] = {}
        self.writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamWriter] = (
            weakref.WeakKeyDictionary()
        )

    def writer(self) -> StreamWriter:
        """This event loop's stream writer (one per process in daphne and the workers)."""
        loop = asyncio.get_running_loop()
        writer = self.writers.get(loop)
        if writer is None:
            writer = self.writers[loop] = StreamWriter()
        return writer

    def start(self, *, message_pk: int, context: JobContext | None = None) -> None:
        """Run the job as a task on this event loop; it outlives the socket.

        ``context`` is the job's ``job_context_load``, when the caller read it already. A
        second start of a reply whose job is still running here (the same ``generate``
        message delivered twice by the channel layer) is ignored: the engine would refuse
        the duplicate request id, and the reply would end as an error although its job
        goes on.
        """
        if message_pk in self.tasks:
            logger.warning("Reply %s is already being generated here; ignoring a second start", message_pk)
            return
        run = generation_run(message_pk=message_pk, context=context, jobs=self)
        task = self.tasks[message_pk] = asyncio.get_running_loop().create_task(run)
        task.add_done_callback(lambda _: self.tasks.pop(message_pk, None))

    def cancel(self, *, message_pk: int) -> None:
        """Stop at once if the job runs here; other processes see the database flag."""
        stream = self.streams.get(message_pk)
        if stream is not None:
            stream.cancel()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for the jobs on this event loop to finish (tests and graceful shutdown).

        Tasks of another loop (a test's earlier ``async_to_sync`` call) cannot be awaited
        here and are left to theirs."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self.tasks.values() if task.get_loop() is loop]
        if mine:
            await asyncio.wait_for(asyncio.gather(*mine, return_exceptions=True), timeout)


def local_jobs() -> LocalJobs:
    """This process's reply jobs (made when the conversations app is ready; looked up, not
    imported: the app's module imports this one to make them)."""
    return cast("ConversationsConfig", apps.get_app_config("conversations")).reply_jobs


def stream_writer() -> StreamWriter:
    """This event loop's stream writer."""
    return local_jobs().writer()


async def generation_run(*, message_pk: int, context: JobContext | None = None, jobs: LocalJobs | None = None) -> None:
    if context is None:
        context = await database_sync_to_async(job_context_load)(message_pk=message_pk)
    if context is not None:
        await GenerationJob(context, jobs=jobs or local_jobs()).run()


def generation_start_local(*, message_pk: int, context: JobContext | None = None) -> None:
    """Run the job on this process's event loop (``LocalJobs.start``)."""
    local_jobs().start(message_pk=message_pk, context=context)


def generation_runs_here() -> bool:
    """Whether this process generates the replies it starts (``INFERENCE_MODE=local``)."""
    return bool(settings.INFERENCE_MODE == "local")


async def generation_dispatch(*, message_pk: int, context: JobContext | None = None) -> None:
    if generation_runs_here():
        generation_start_local(message_pk=message_pk, context=context)
    else:
        await get_channel_layer().send(settings.INFERENCE_CHANNEL, {"type": "generate", "message_pk": message_pk})


def generation_cancel_local(*, message_pk: int) -> None:
    """Stop at once if the job runs here; other processes see the database flag."""
    local_jobs().cancel(message_pk=message_pk)


async def generation_wait_idle(timeout: float = 30.0) -> None:
    """Wait for the jobs on this event loop to finish (tests and graceful shutdown)."""
    await local_jobs().wait_idle(timeout)
