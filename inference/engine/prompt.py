"""Turn a conversation's messages into prompt token ids that fit the context window.

Policy: keep the system prompt, keep the newest turns, drop the oldest turns first,
and leave room for the reply. A turn is a user message and the replies after it, so
the prompt never starts with an orphaned assistant message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ChatMessage = dict[str, str]


class PromptTooLongError(ValueError):
    """Even the newest message alone does not fit the context window."""


@dataclass(frozen=True)
class FittedPrompt:
    prompt_ids: list[int]
    messages: list[ChatMessage]
    dropped_messages: int
    max_new_tokens: int


def render_ids(tokenizer: Any, messages: list[ChatMessage]) -> list[int]:
    """Apply the tokenizer's chat template (or a plain fallback) and tokenize."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        return list(ids)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return list(tokenizer.encode("\n".join(lines) + "\nAssistant:", add_special_tokens=True))


def render_text(tokenizer: Any, messages: list[ChatMessage]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\nAssistant:"


def _turn_starts(history: list[ChatMessage]) -> list[int]:
    return [index for index, message in enumerate(history) if message["role"] == "user"]


def fit_prompt(
    tokenizer: Any, messages: list[ChatMessage], *, context_length: int, max_new_tokens: int
) -> FittedPrompt:
    """Drop the oldest turns until the prompt plus the reply's reserve fits."""
    # 1. Split off the system prompt, which is always kept.
    system = [m for m in messages[:1] if m["role"] == "system"]
    history = messages[len(system) :]
    reserve = max(1, min(max_new_tokens, context_length // 2))
    budget = context_length - reserve
    # 2. Binary-search the earliest turn start whose suffix fits (shorter suffixes
    #    never need more tokens, so "fits" is monotonic along the candidates).
    candidates = [0, *_turn_starts(history)[1:]]
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        kept = system + history[candidates[middle] :]
        ids = render_ids(tokenizer, kept)
        if len(ids) <= budget:
            best, high = (candidates[middle], kept, ids), middle - 1
        else:
            low = middle + 1
    if best is not None:
        start, kept, ids = best
        return FittedPrompt(ids, kept, start, min(max_new_tokens, context_length - len(ids)))
    # 3. Not even the last turn fits.
    last_turn = _turn_starts(history)[-1:] or [0]
    needed = len(render_ids(tokenizer, system + history[last_turn[0] :]))
    raise PromptTooLongError(
        f"The message is too long for this model: it needs {needed:,} tokens and "
        f"{budget:,} are available after leaving room for the reply."
    )
