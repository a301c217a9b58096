"""The engine's public vocabulary: what a caller submits and what it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings. ``temperature == 0`` means greedy.

    ``presence_penalty`` and ``frequency_penalty`` work as OpenAI's do (-2 to 2): each
    token already in the reply has its logit lowered by the presence penalty once and
    by the frequency penalty for every time it appeared, which steers a small model out
    of repeating itself. ``ignore_eos`` keeps generating past end-of-sequence tokens
    (benchmarks use it to get replies of a fixed length).

    ``logprobs`` asks for each generated token's log probability with that many of the
    most likely alternatives (0 for none); ``None``, the default, computes nothing.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


@dataclass
class GenerationRequest:
    """One stream of tokens to generate.

    ``cache_key`` names a conversation whose KV cache may be reused for a later
    request that extends the same token prefix. ``adapter`` names a LoRA adapter
    registered with the engine; ``None`` is the base model.
    """

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None
    cache_key: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A token and its log probability under the model's own distribution: the
    log-softmax of its logits before temperature, top_p and penalties.

    ``text`` is the token as text (a special token's name; a piece of a multibyte
    character as ``\\xNN`` escapes) and ``piece`` its exact bytes. ``top`` holds the
    most likely tokens at that position, most likely first (their own ``top`` is empty).
    """

    token_id: int
    text: str
    piece: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """New text for a request. ``text`` is a delta, never the whole reply.

    For a request with ``SamplingParams.logprobs``, ``logprobs`` has one entry for each
    token generated since the previous event (the tokens of this delta; text the
    detokenizer or a stop string held back arrives with a later event, and the last
    event before the FinishEvent may carry entries with empty ``text``).
    """

    request_id: str
    text: str
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    """The last event of every request, sent exactly once, even after a crash.

    ``completion_ids`` are the generated token ids (including a final EOS token).
    """

    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    first_token_seconds: float | None = None
    queue_seconds: float | None = None
    decode_seconds: float | None = None
    reused_prompt_tokens: int = 0
    completion_ids: tuple[int, ...] = ()


EngineEvent = TokenEvent | FinishEvent
EventCallback = Callable[[EngineEvent], None]
