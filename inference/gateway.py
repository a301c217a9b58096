"""One way for Django code to run the model: open a stream, read its events, cancel it.

Chat generation jobs and the HTTP API both go through ``open_stream``. It loads the
engine for the model on first use (in a thread), fits the messages into the context
window, submits the request and hands back an async iterator of engine events that
ends with exactly one ``FinishEvent``. Leaving the iteration early (a client that
disconnected) cancels the request, which frees its slot in the engine at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from inference import engines
from inference.engine.prompt import ChatMessage, FittedPrompt, PromptTooLongError, fit_prompt
from inference.engine.types import EngineEvent, FinishEvent, GenerationRequest, SamplingParams
from inference.registry import ModelSpec

__all__ = ["PromptTooLongError", "Stream", "open_stream"]


@dataclass
class Stream:
    request_id: str
    fitted: FittedPrompt
    served: engines.ServedModel
    queue: asyncio.Queue[EngineEvent] = field(default_factory=asyncio.Queue)
    finished: bool = False

    def cancel(self) -> None:
        if not self.finished:
            self.served.engine.cancel(self.request_id)

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


async def open_stream(
    *,
    spec: ModelSpec,
    messages: list[ChatMessage],
    params: SamplingParams,
    request_id: str | None = None,
    cache_key: str | None = None,
) -> Stream:
    """Start generating; raises PromptTooLongError (a sentence for the user) first."""
    served = await asyncio.to_thread(engines.engine_for, spec)
    fitted = fit_prompt(
        served.loaded.tokenizer,
        messages,
        context_length=served.loaded.context_length,
        max_new_tokens=params.max_new_tokens,
    )
    stream = Stream(request_id=request_id or f"req-{uuid.uuid4()}", fitted=fitted, served=served)
    loop = asyncio.get_running_loop()

    def deliver(event: EngineEvent) -> None:  # runs on the engine thread
        loop.call_soon_threadsafe(stream.queue.put_nowait, event)

    request = GenerationRequest(
        request_id=stream.request_id,
        prompt_ids=fitted.prompt_ids,
        params=replace(params, max_new_tokens=fitted.max_new_tokens),
        adapter=spec.id if spec.adapter_path else None,
        cache_key=cache_key,
    )
    served.engine.submit(request, deliver)
    return stream
