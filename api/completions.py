"""Chat completions: a validated request in, gateway streams out, OpenAI shapes back.

``completion_open`` starts one engine stream per choice, fitting the prompt once for
all of them (so errors such as a prompt that cannot fit surface before any byte is
sent); ``completion_collect`` waits for the whole reply and ``completion_chunks``
yields OpenAI chunk objects as tokens arrive. Leaving ``completion_chunks`` early (a client that disconnected) cancels
its engine request at once through the gateway. With ``logprobs``, each choice (and
each chunk) carries OpenAI's ``logprobs.content``: one entry per generated token.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from api import responses
from api.errors import ApiError
from api.schemas import ChatRequest
from inference import gateway
from inference.engine.types import FinishEvent, SamplingParams, TokenEvent, TokenLogprob
from inference.registry import ModelSpec

logger = logging.getLogger(__name__)

# A queue that is full now has usually moved on within a few seconds (replies end, or
# pass their first tokens); a client told to come back sooner would only add load.
BUSY_RETRY_AFTER_SECONDS = 5


@dataclass
class Choice:
    """One reply; ``logprobs`` is None unless the request asked for them."""

    index: int
    text: str = ""
    finish_reason: responses.FinishReason = None
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Completion:
    """One request's streams and what they produced so far."""

    id: str
    model: str
    created: int
    streams: list[gateway.Stream]
    choices: list[Choice] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def sampling_params(request: ChatRequest, index: int) -> SamplingParams:
    """Choice ``index``'s settings; with a seed, each choice gets its own (seed + index)."""
    return SamplingParams(
        max_new_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=None if request.seed is None else request.seed + index,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logprobs=request.top_logprobs if request.logprobs else None,
    )


async def completion_open(*, spec: ModelSpec, request: ChatRequest) -> Completion:
    """Submit every choice to the engine; raise ApiError before anything was sent."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    streams: list[gateway.Stream] = []
    try:
        for index in range(request.n):
            streams.append(
                await gateway.open_stream(
                    spec=spec,
                    messages=request.messages,
                    params=sampling_params(request, index),
                    request_id=f"{completion_id}-{index}",
                    fitted=streams[0].fitted if streams else None,  # every choice has the same prompt
                )
            )
    except gateway.PromptTooLongError as exc:
        _cancel_all(streams)
        raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from exc
    except gateway.EngineBusyError as exc:
        _cancel_all(streams)
        raise ApiError(
            503, str(exc), code="server_busy", headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)}
        ) from exc
    except gateway.WorkerUnavailableError as exc:
        _cancel_all(streams)
        raise ApiError(503, str(exc)) from exc
    except Exception as exc:
        _cancel_all(streams)
        logger.exception("Could not start the model %s", spec.id)
        raise ApiError(503, f"The model {spec.id!r} could not be started; try again shortly.") from exc
    choices = [Choice(index=index, logprobs=[] if request.logprobs else None) for index in range(request.n)]
    return Completion(completion_id, spec.id, int(time.time()), streams, choices)


def _cancel_all(streams: list[gateway.Stream]) -> None:
    for stream in streams:
        stream.cancel()


def finish_error(event: FinishEvent) -> ApiError | None:
    """The ApiError for a request that ended badly, or None for stop and length."""
    if event.finish_reason == "error":
        return ApiError(500, f"The model failed while writing the reply: {event.error or 'unknown error'}.")
    if event.finish_reason == "cancelled":
        return ApiError(503, "The model stopped before finishing the reply (the server is shutting down).")
    return None


def _record_finish(completion: Completion, choice: Choice, event: FinishEvent) -> None:
    problem = finish_error(event)
    if problem is not None:
        raise problem
    choice.finish_reason = "length" if event.finish_reason == "length" else "stop"  # the others raised above
    completion.prompt_tokens = event.prompt_tokens
    completion.completion_tokens += event.completion_tokens


async def _collect_choice(completion: Completion, index: int) -> None:
    choice = completion.choices[index]
    async for event in completion.streams[index].events():
        if isinstance(event, TokenEvent):
            choice.text += event.text
            if choice.logprobs is not None:
                choice.logprobs.extend(event.logprobs)
        else:
            _record_finish(completion, choice, event)


async def completion_collect(*, completion: Completion) -> Completion:
    """Wait for every choice; cancels the others if one fails."""
    try:
        await asyncio.gather(*(_collect_choice(completion, index) for index in range(len(completion.streams))))
    finally:
        _cancel_all(completion.streams)
    return completion


def completion_body(completion: Completion) -> dict[str, Any]:
    """The ``chat.completion`` object."""
    return responses.ChatCompletion(
        id=completion.id,
        created=completion.created,
        model=completion.model,
        choices=[
            responses.ChatCompletionChoice(
                index=choice.index,
                message=responses.AssistantMessage(content=choice.text),
                logprobs=logprobs_body(choice.logprobs),
                finish_reason=choice.finish_reason,
            )
            for choice in completion.choices
        ],
        usage=responses.Usage(**completion.usage()),
    ).model_dump()


def logprobs_body(entries: Sequence[TokenLogprob] | None) -> responses.ChatCompletionLogprobs | None:
    """OpenAI's ``logprobs`` of a choice or chunk: None when the request did not ask."""
    if entries is None:
        return None
    content = [
        responses.ChatCompletionTokenLogprob(
            **_token_logprob(entry).model_dump(), top_logprobs=[_token_logprob(top) for top in entry.top]
        )
        for entry in entries
    ]
    return responses.ChatCompletionLogprobs(content=content)


# JSON has no -Infinity: a token the model rules out (a masked logit) reads as OpenAI's -9999.
LOWEST_LOGPROB = -9999.0


def _token_logprob(entry: TokenLogprob) -> responses.TokenLogprob:
    return responses.TokenLogprob(token=entry.text, logprob=max(entry.logprob, LOWEST_LOGPROB), bytes=list(entry.piece))


def _chunk(
    completion: Completion, choices: list[responses.ChatCompletionChunkChoice], include_usage: bool
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``usage`` is there (null) only when the request asked for it."""
    chunk = responses.ChatCompletionChunk(
        id=completion.id, created=completion.created, model=completion.model, choices=choices
    ).model_dump()
    if not include_usage:
        del chunk["usage"]
    return chunk


def _delta(
    index: int,
    delta: responses.ChunkDelta,
    logprobs: responses.ChatCompletionLogprobs | None,
    finish_reason: responses.FinishReason = None,
) -> responses.ChatCompletionChunkChoice:
    return responses.ChatCompletionChunkChoice(
        index=index,
        delta=delta,
        logprobs=logprobs,
        finish_reason=finish_reason,
    )


async def completion_chunks(*, completion: Completion, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """``chat.completion.chunk`` objects for the first choice, as the engine writes.

    The first carries the role, the next ones content deltas, the last an empty delta
    with the finish reason; with ``include_usage`` a final chunk with ``choices: []``
    carries the token counts. With log probabilities every chunk's choice has them:
    the entries of the tokens of its delta (none for the first and last); a delta's text
    may be empty for tokens that add none (an end token, a stop string cut off). Raises
    ApiError if the model fails mid-way.
    """
    choice = completion.choices[0]
    no_tokens = logprobs_body(None if choice.logprobs is None else [])
    yield _chunk(completion, [_delta(0, responses.ChunkDelta(role="assistant", content=""), no_tokens)], include_usage)
    async for event in completion.streams[0].events():
        if isinstance(event, TokenEvent):
            if event.text or event.logprobs:
                choice.text += event.text
                logprobs = logprobs_body(None if choice.logprobs is None else event.logprobs)
                yield _chunk(completion, [_delta(0, responses.ChunkDelta(content=event.text), logprobs)], include_usage)
        else:
            _record_finish(completion, choice, event)
    yield _chunk(completion, [_delta(0, responses.ChunkDelta(), no_tokens, choice.finish_reason)], include_usage)
    if include_usage:
        yield {**_chunk(completion, [], include_usage), "usage": responses.Usage(**completion.usage()).model_dump()}


def seed_body(
    completion: Completion, content: str, finish_reason: responses.FinishReason, usage: bool
) -> dict[str, Any]:
    """The seed API's (Spellbook's) shape, for a whole reply or (with ``usage`` False) one delta."""
    token_usage = responses.SeedTokenUsage(
        prompt=completion.prompt_tokens,
        completion=completion.completion_tokens,
        total=completion.prompt_tokens + completion.completion_tokens,
    )
    return responses.SeedChatResponse(
        chat_completion=responses.SeedChatCompletion(
            message=responses.SeedMessage(content=content),
            finish_reason=finish_reason,
        ),
        token_usage=token_usage if usage else None,
    ).model_dump()


async def seed_chunks(*, completion: Completion) -> AsyncIterator[dict[str, Any]]:
    """The seed API's stream: one event per delta, then one with the finish reason and usage."""
    async for chunk in completion_chunks(completion=completion, include_usage=False):
        choices = chunk["choices"]
        if choices and choices[0]["delta"].get("content"):
            yield seed_body(completion, choices[0]["delta"]["content"], None, usage=False)
    yield seed_body(completion, "", completion.choices[0].finish_reason, usage=True)
