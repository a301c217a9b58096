"""One way for Django code to run the model: open a stream, read its events, cancel it.

Chat generation jobs and the HTTP API both go through ``open_stream``. It fits the
messages into the context window, submits the request and hands back a stream whose
events end with exactly one ``FinishEvent``. Leaving ``events()`` early (a client
that disconnected) cancels the request, which frees its slot in the engine at once.

With ``INFERENCE_MODE=local`` the engine runs in this process (loaded on first use,
in a thread). With ``INFERENCE_MODE=remote`` the request travels over the channel
layer to a generation worker (``manage.py runworker inference``), which runs it on
its own engine and sends the events back to a reply channel of this process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from inference.engine.prompt import ChatMessage, FittedPrompt, PromptTooLongError, fit_prompt
from inference.engine.types import (
    EngineEvent,
    FinishEvent,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
)
from inference.registry import ModelSpec, model_get
from inference.runtime import ServedModel, process_runtime

__all__ = ["PromptTooLongError", "Stream", "open_stream"]


class WorkerUnavailableError(RuntimeError):
    """No generation worker answered."""


class EngineBusyError(WorkerUnavailableError):
    """The process already holds as many requests as ``INFERENCE_MAX_QUEUED_REQUESTS`` lets
    wait beyond its batch; try again in a few seconds."""


@dataclass
class Stream:
    """Events of one request; subclasses say where they come from."""

    request_id: str
    fitted: FittedPrompt
    queue: asyncio.Queue[EngineEvent] = field(default_factory=asyncio.Queue)
    finished: bool = False
    # Set when the request is over for the engine (its FinishEvent arrived), read or not.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # The weight form of the engine writing it ("fp32", "int8"...), blank if it has none.
    weights: str = ""

    def cancel(self) -> None:
        raise NotImplementedError

    def put(self, event: EngineEvent) -> None:
        """Deliver ``event`` to the reader (on the event loop)."""
        self.queue.put_nowait(event)
        if isinstance(event, FinishEvent):
            self.ended.set()

    async def next_event(self, timeout: float | None = None) -> EngineEvent | None:
        """The next event, or None if ``timeout`` seconds pass without one."""
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(event, FinishEvent):
            self.finished = True
        return event

    async def events(self) -> AsyncIterator[EngineEvent]:
        """Every event up to and including the FinishEvent; leaving early cancels."""
        try:
            while not self.finished:
                event = await self.next_event()
                if event is not None:
                    yield event
        finally:
            self.cancel()


@dataclass
class LocalStream(Stream):
    served: ServedModel | None = None

    def cancel(self) -> None:
        if not self.finished and self.served is not None:
            self.served.engine.cancel(self.request_id)

    def put(self, event: EngineEvent) -> None:
        super().put(event)
        if isinstance(event, FinishEvent) and self.served is not None:
            self.served.request_ended()


def _admit(served: ServedModel) -> None:
    """Count the request against this process's queue bound, or refuse it."""
    limit = settings.INFERENCE_MAX_BATCH_SIZE + settings.INFERENCE_MAX_QUEUED_REQUESTS
    if not served.request_admit(limit):
        raise EngineBusyError(
            f"The server is busy: it is writing or queueing as many replies as it may ({limit}). "
            "Try again in a few seconds."
        )


async def open_local_stream(
    *,
    spec: ModelSpec,
    messages: list[ChatMessage],
    params: SamplingParams,
    request_id: str,
    cache_key: str | None,
    fitted: FittedPrompt | None = None,
) -> LocalStream:
    served = await asyncio.to_thread(process_runtime().engine_for, spec)
    if fitted is None:  # tokenizing a long history takes a while: never on the event loop
        fitted = await asyncio.to_thread(
            fit_prompt,
            served.loaded.tokenizer,
            messages,
            context_length=served.loaded.context_length,
            max_new_tokens=params.max_new_tokens,
        )
    _admit(served)
    stream = LocalStream(
        request_id=request_id, fitted=fitted, served=served, weights=str(getattr(served.engine, "weights", "") or "")
    )
    loop = asyncio.get_running_loop()

    def deliver(event: EngineEvent) -> None:  # runs on the engine thread
        loop.call_soon_threadsafe(stream.put, event)

    request = GenerationRequest(
        request_id=request_id,
        prompt_ids=fitted.prompt_ids,
        params=replace(params, max_new_tokens=fitted.max_new_tokens),
        adapter=spec.id if spec.adapter_path else None,
        cache_key=cache_key,
    )
    served.engine.submit(request, deliver)
    return stream


# -- Remote: the web process side -----------------------------------------------------


@dataclass
class RemoteStream(Stream):
    reply_channel: str = ""
    worker_channel: str = ""
    pump: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        if self.finished or not self.worker_channel:
            return
        message = {"type": "stream.cancel", "request_id": self.request_id}
        asyncio.get_running_loop().create_task(get_channel_layer().send(self.worker_channel, message))
        self.finished = True
        self.ended.set()
        if self.pump is not None:
            self.pump.cancel()

    async def pump_events(self) -> None:
        """Move events from the reply channel to the queue; a silent worker is an error."""
        layer = get_channel_layer()
        limit = settings.INFERENCE_STALE_AFTER_SECONDS
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(self.reply_channel), limit)
            except TimeoutError:
                error = "The generation worker stopped responding."
                self.put(FinishEvent(self.request_id, "error", len(self.fitted.prompt_ids), 0, error))
                return
            event = event_from_message(message)
            self.put(event)
            if isinstance(event, FinishEvent):
                return


def event_to_message(event: EngineEvent) -> dict[str, Any]:
    kind = "token" if isinstance(event, TokenEvent) else "finish"
    return {"type": "stream.event", "kind": kind, "event": asdict(event)}


def event_from_message(message: dict[str, Any]) -> EngineEvent:
    if message["kind"] == "token":
        event = message["event"]
        logprobs = tuple(_logprob_from_message(entry) for entry in event.get("logprobs", ()))
        return TokenEvent(**{**event, "logprobs": logprobs})
    return FinishEvent(**message["event"])


def _logprob_from_message(entry: dict[str, Any]) -> TokenLogprob:
    """A log probability entry back from its message form (where tuples became lists)."""
    top = tuple(_logprob_from_message(alternative) for alternative in entry["top"])
    return TokenLogprob(entry["token_id"], entry["text"], bytes(entry["piece"]), entry["logprob"], top)


async def open_remote_stream(
    *,
    spec: ModelSpec,
    messages: list[ChatMessage],
    params: SamplingParams,
    request_id: str,
    cache_key: str | None,
    fitted: FittedPrompt | None = None,
) -> RemoteStream:
    layer = get_channel_layer()
    reply_channel = await layer.new_channel("inference-reply.")
    await layer.send(
        settings.INFERENCE_CHANNEL,
        {
            "type": "stream.open",
            "reply_channel": reply_channel,
            "request_id": request_id,
            "model_id": spec.id,
            "messages": messages,
            "params": {**asdict(params), "stop": list(params.stop)},
            "cache_key": cache_key,
            "fitted": None if fitted is None else asdict(fitted),
        },
    )
    try:
        opened = await asyncio.wait_for(layer.receive(reply_channel), settings.INFERENCE_STALE_AFTER_SECONDS)
    except TimeoutError:
        raise WorkerUnavailableError("No generation worker is available; try again shortly.") from None
    if opened["type"] == "stream.refused":
        if opened["too_long"]:
            raise PromptTooLongError(opened["error"])
        raise EngineBusyError(opened["error"]) if opened.get("busy") else WorkerUnavailableError(opened["error"])
    fitted = FittedPrompt(**opened["fitted"])
    stream = RemoteStream(
        request_id=request_id,
        fitted=fitted,
        reply_channel=reply_channel,
        worker_channel=opened["worker_channel"],
        weights=opened.get("weights", ""),
    )
    stream.pump = asyncio.get_running_loop().create_task(stream.pump_events())
    return stream


# -- Remote: the worker side ------------------------------------------------------------


async def serve_remote_stream(message: dict[str, Any], *, worker_channel: str, streams: dict[str, Stream]) -> None:
    """Run one ``stream.open`` request on this worker's engine, replying event by event."""
    layer = get_channel_layer()
    reply_channel, request_id = message["reply_channel"], message["request_id"]
    spec = model_get(message["model_id"])
    params = SamplingParams(**{**message["params"], "stop": tuple(message["params"]["stop"])})
    try:
        if spec is None:
            raise WorkerUnavailableError(f"The model {message['model_id']!r} is not available on this worker.")
        stream = await open_local_stream(
            spec=spec,
            messages=message["messages"],
            params=params,
            request_id=request_id,
            cache_key=message["cache_key"],
            fitted=FittedPrompt(**message["fitted"]) if message.get("fitted") else None,
        )
    except (PromptTooLongError, WorkerUnavailableError) as exc:
        refusal = {"error": str(exc), "too_long": isinstance(exc, PromptTooLongError)}
        await layer.send(reply_channel, {"type": "stream.refused", **refusal, "busy": isinstance(exc, EngineBusyError)})
        return
    streams[request_id] = stream
    try:
        await layer.send(
            reply_channel,
            {
                "type": "stream.opened",
                "fitted": asdict(stream.fitted),
                "worker_channel": worker_channel,
                "weights": stream.weights,
            },
        )
        async for event in stream.events():
            await layer.send(reply_channel, event_to_message(event))
    finally:
        streams.pop(request_id, None)


async def open_stream(
    *,
    spec: ModelSpec,
    messages: list[ChatMessage],
    params: SamplingParams,
    request_id: str | None = None,
    cache_key: str | None = None,
    local: bool | None = None,
    fitted: FittedPrompt | None = None,
) -> Stream:
    """Start generating; raises PromptTooLongError (a sentence for the user) first.

    ``local`` forces this process's engine (generation workers and chat jobs already
    running on one); by default ``INFERENCE_MODE`` decides. ``fitted`` is the prompt an
    earlier stream of the same request was given (``Stream.fitted``): the messages are
    then not fitted again.
    """
    request_id = request_id or f"req-{uuid.uuid4()}"
    run_here = local if local is not None else settings.INFERENCE_MODE == "local"
    opener = open_local_stream if run_here else open_remote_stream
    return await opener(
        spec=spec, messages=messages, params=params, request_id=request_id, cache_key=cache_key, fitted=fitted
    )
