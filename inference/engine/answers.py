"""A model's greedy answers to chat examples, and whether each is the expected reply.

Prompts are batched, left-padded and asked shortest first; an answer is an exact match
when it equals the expected reply after collapsing whitespace and ignoring case. The
training loop counts what it has learnt with these (``exact_matches``), and
``evaluation.evaluate`` scores held-out examples with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inference.engine.datasets import Example


@dataclass(frozen=True)
class EvaluationRow:
    """One held-out example: the last prompt message, the expected and given answers."""

    prompt: str
    expected: str
    answer: str
    exact: bool


def normalize_answer(text: str) -> str:
    """Collapse whitespace and ignore case: how answers are compared."""
    return " ".join(text.split()).casefold()


def exact_matches(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    batch_size: int = 8,
    between_batches: Callable[[], None] | None = None,
) -> list[bool]:
    """Whether ``model``'s greedy answer to each example is its expected reply."""
    if not examples:
        return []
    limit = longest_reply_tokens(tokenizer, examples) + 2
    answers = generate_answers(
        model, tokenizer, examples, max_new_tokens=limit, batch_size=batch_size, between_batches=between_batches
    )
    return [answer_row(example, answer).exact for example, answer in zip(examples, answers, strict=True)]


def generate_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    between_batches: Callable[[], None] | None = None,
) -> list[str]:
    """The model's greedy reply to each example's prompt, in the order given
    (``between_batches`` runs before each batch of ``batch_size`` prompts)."""
    prompts = [_prompt_ids(tokenizer, example) for example in examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        if between_batches is not None:
            between_batches()
        replies = _generate_batch(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens)
        answers.update(zip(chunk, replies, strict=True))
    return [answers[i] for i in range(len(prompts))]


def _prompt_ids(tokenizer: Any, example: Example) -> list[int]:
    text = tokenizer.apply_chat_template(example.prompt_chat(), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _generate_batch(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding: every prompt ends where replies start
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]


def longest_reply_tokens(tokenizer: Any, examples: Sequence[Example]) -> int:
    replies = [example.expected_answer for example in examples]
    return max(len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"])


def answer_row(example: Example, answer: str) -> EvaluationRow:
    prompt = example.prompt_chat()[-1]["content"] if example.prompt_chat() else ""
    expected = example.expected_answer
    return EvaluationRow(prompt, expected, answer, normalize_answer(answer) == normalize_answer(expected))
