"""Turn a conversation's messages into prompt token ids that fit the context window.

Policy: keep the system prompt, keep the newest turns, drop the oldest turns first,
and leave room for the reply. A turn is a user message and the replies after it, so
the prompt never starts with an orphaned assistant message. When the newest message alone
is too long and carries files (its text from ``CUT_FROM`` on), the files are cut from the
end until it fits, and the prompt says so.
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
    cut_chars: int = 0  # characters of the newest message's files left out to fit


# Set on a message whose text from this character on (a number, as text) is attached files,
# which may be cut to fit; templates ignore the extra key.
CUT_FROM = "cut_from"
CUT_NOTE = "\n[The rest of the attached files was cut here to fit the model's context window.]"


# Set (to any value) on a final assistant message that the model is to go on writing (a
# reply continued after stopping at its token limit); templates ignore the extra key.
CONTINUE = "continue"


def _continuing(messages: list[ChatMessage]) -> bool:
    return bool(messages) and messages[-1]["role"] == "assistant" and CONTINUE in messages[-1]


def _template_options(messages: list[ChatMessage]) -> dict[str, bool]:
    """A continued reply's prompt ends inside its text; any other opens a new reply."""
    continuing = _continuing(messages)
    return {"add_generation_prompt": not continuing, "continue_final_message": continuing}


def _plain_text(messages: list[ChatMessage]) -> str:
    text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return text if _continuing(messages) else text + "\nAssistant:"


def render_ids(tokenizer: Any, messages: list[ChatMessage]) -> list[int]:
    """Apply the tokenizer's chat template (or a plain fallback) and tokenize."""
    if getattr(tokenizer, "chat_template", None):
        options = _template_options(messages)
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **options)
        return list(ids)
    return list(tokenizer.encode(_plain_text(messages), add_special_tokens=True))


def render_text(tokenizer: Any, messages: list[ChatMessage]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, **_template_options(messages)))
    return _plain_text(messages)


def _turn_starts(history: list[ChatMessage]) -> list[int]:
    return [index for index, message in enumerate(history) if message["role"] == "user"]


def fit_prompt(
    tokenizer: Any, messages: list[ChatMessage], *, context_length: int, max_new_tokens: int
) -> FittedPrompt:
    """Drop the oldest turns until the prompt plus the reply's reserve fits.

    Costs a few renders of what is kept, however long the history: older turns are
    priced from their texts' token counts, and real renders only confirm the guess
    (a search of renders of the whole history took 82 s for 20,000 short messages).
    """
    # 1. Split off the system prompt, which is always kept.
    system = [m for m in messages[:1] if m["role"] == "system"]
    history = messages[len(system) :]
    reserve = max(1, min(max_new_tokens, context_length // 2))
    budget = context_length - reserve
    starts = [0, *_turn_starts(history)[1:]]  # where the kept history may begin, oldest first
    # 2. The newest turn must fit on its own, its files cut if need be.
    fits, fits_ids = len(starts) - 1, render_ids(tokenizer, system + history[starts[-1] :])
    cut = 0
    if len(fits_ids) > budget:
        newest, fits_ids, cut = _cut_files(tokenizer, system, history[starts[-1] :], budget, len(fits_ids))
        history = history[: starts[-1]] + newest
    # 3. Narrow down the earliest start that fits: ``fails`` is a start known not to fit
    #    (-1: none yet), ``fits`` one known to fit. Guess from the estimates, corrected by
    #    what each render showed; after three guesses bisect, so a template the estimates
    #    misjudge still costs no more than a search.
    costs = _TurnCosts(tokenizer, history, starts)
    fails, renders, scale = -1, 0, 1.0
    while fails + 1 < fits:
        if renders < 3:
            guess = costs.earliest_within((budget - len(fits_ids)) / scale, after=fails, before=fits)
        else:
            guess = (fails + fits) // 2
        ids = render_ids(tokenizer, system + history[starts[guess] :])
        renders += 1
        estimated = costs.between(guess, fits)
        scale = max(scale, (len(ids) - len(fits_ids)) / estimated) if estimated > 0 else scale
        if len(ids) <= budget:
            fits, fits_ids = guess, ids
        else:
            fails = guess
    # 4. Keep from the earliest start that fits.
    start = starts[fits]
    kept = [{k: v for k, v in m.items() if k != CUT_FROM} for m in system + history[start:]]
    return FittedPrompt(fits_ids, kept, start, min(max_new_tokens, context_length - len(fits_ids)), cut)


def _cut_files(
    tokenizer: Any, system: list[ChatMessage], turn: list[ChatMessage], budget: int, needed: int
) -> tuple[list[ChatMessage], list[int], int]:
    """The newest turn with as much of its last message's files as fits ``budget`` (a
    search over the characters kept), its ids and the characters cut."""
    last = turn[-1]
    start = int(last.get(CUT_FROM, len(last["content"])))
    files = len(last["content"]) - start

    def kept(chars: int) -> tuple[list[ChatMessage], list[int]]:
        messages = [*turn[:-1], {**last, "content": last["content"][: start + chars] + CUT_NOTE}]
        return messages, render_ids(tokenizer, system + messages)

    best = kept(0)
    if files <= 0 or len(best[1]) > budget:
        raise PromptTooLongError(
            f"The message is too long for this model: it needs {needed:,} tokens and "
            f"{budget:,} are available after leaving room for the reply."
        )
    low, high = 0, files - 1
    while low < high:
        middle = (low + high + 1) // 2
        attempt = kept(middle)
        if len(attempt[1]) <= budget:
            low, best = middle, attempt
        else:
            high = middle - 1
    return best[0], best[1], files - low


class _TurnCosts:
    """Estimated tokens of each turn: its texts' token counts plus the template's cost
    per message, tokenized lazily from the newest turn back in batches."""

    BATCH = 64

    def __init__(self, tokenizer: Any, history: list[ChatMessage], starts: list[int]) -> None:
        self.tokenizer = tokenizer
        self.history = history
        self.starts = starts
        self.per_message = _template_tokens_per_message(tokenizer)
        self.known: dict[int, int] = {}  # turn index -> estimated tokens

    def earliest_within(self, room: float, *, after: int, before: int) -> int:
        """The earliest turn in (``after``, ``before``) from which the turns up to
        ``before`` are estimated to fit in ``room``; the turn just before ``before`` if
        none is (that it does not fit must still be confirmed)."""
        guess, used = before - 1, 0
        for turn in range(before - 1, after, -1):
            used += self.cost(turn)
            if used > room:
                break
            guess = turn
        return guess

    def between(self, first: int, end: int) -> int:
        """Estimated tokens of turns ``first`` up to (not including) ``end``."""
        return sum(self.cost(turn) for turn in range(first, end))

    def cost(self, turn: int) -> int:
        if turn not in self.known:
            self._estimate(range(max(0, turn - self.BATCH + 1), turn + 1))
        return self.known[turn]

    def _estimate(self, turns: range) -> None:
        bounds = [(self.starts[t], self.starts[t + 1] if t + 1 < len(self.starts) else len(self.history)) for t in turns]
        texts = [m["content"] for begin, end in bounds for m in self.history[begin:end]]
        counts = iter(_token_counts(self.tokenizer, texts))
        for turn, (begin, end) in zip(turns, bounds, strict=True):
            self.known[turn] = round(sum(next(counts) + self.per_message for _ in range(begin, end)))


def _token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _template_tokens_per_message(tokenizer: Any) -> float:
    """What the chat template adds around one message's text (the mean of a user's and
    an assistant's), measured on a three-message probe; 0 if the template refuses it."""
    probe: list[ChatMessage] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "x"},
    ]
    try:
        lengths = [len(render_ids(tokenizer, probe[:count])) for count in (1, 2, 3)]
    except Exception:  # a template with rules of its own; the estimates only steer the search
        return 0
    text = _token_counts(tokenizer, ["x"])[0]
    return max(0.0, (lengths[2] - lengths[0]) / 2 - text)
