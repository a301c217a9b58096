"""Score a model on held-out chat examples: exact match, token accuracy, answers.

For every example the model is asked everything before the last assistant message
and answers greedily (prompts batched, left-padded, shortest first); the answer
counts as an exact match when it equals the expected reply after collapsing
whitespace and ignoring case. Token accuracy is teacher-forced: the share of the
expected reply's tokens (end-of-turn marker included) that the model ranks first.
The same function scores the base model and a fine-tuned one::

    base = evaluate(loaded.model, loaded.tokenizer, held_out)
    with adapter_applied(loaded.model, adapter_dir) as tuned:
        after = evaluate(tuned, loaded.tokenizer, held_out)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inference.engine.datasets import Example
from inference.engine.training import score_examples


@dataclass(frozen=True)
class EvaluationRow:
    """One held-out example: the last prompt message, the expected and given answers."""

    prompt: str
    expected: str
    answer: str
    exact: bool


@dataclass
class EvaluationResult:
    examples: int
    exact_match: float  # share of examples, 0..1
    token_accuracy: float  # share of expected reply tokens, 0..1
    loss: float  # teacher-forced, per expected reply token
    rows: list[EvaluationRow]


def normalize_answer(text: str) -> str:
    """Collapse whitespace and ignore case: how answers are compared."""
    return " ".join(text.split()).casefold()


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
) -> EvaluationResult:
    """Greedy answers and teacher-forced token accuracy of ``model`` on ``examples``.

    ``max_new_tokens`` defaults to the longest expected reply plus 8 tokens, so a
    model that rambles is cut off soon after it has already missed.
    """
    if not examples:
        return EvaluationResult(0, 0.0, 0.0, 0.0, [])
    limit = max_new_tokens or _longest_reply_tokens(tokenizer, examples) + 8
    answers = generate_answers(model, tokenizer, examples, max_new_tokens=limit, batch_size=batch_size)
    rows = [_row(example, answer) for example, answer in zip(examples, answers, strict=True)]
    loss, accuracy = score_examples(model, tokenizer, examples)
    exact = sum(row.exact for row in rows) / len(rows)
    return EvaluationResult(len(rows), exact, accuracy, loss, rows)


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
    limit = _longest_reply_tokens(tokenizer, examples) + 2
    answers = generate_answers(
        model, tokenizer, examples, max_new_tokens=limit, batch_size=batch_size, between_batches=between_batches
    )
    return [_row(example, answer).exact for example, answer in zip(examples, answers, strict=True)]


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


@contextmanager
def adapter_applied(model: Any, adapter_dir: Path | str) -> Iterator[Any]:
    """``model`` with a peft LoRA adapter folder applied; removed again on exit."""
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(model, str(adapter_dir))
    tuned.eval()
    try:
        yield tuned
    finally:
        tuned.unload()


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


def _longest_reply_tokens(tokenizer: Any, examples: Sequence[Example]) -> int:
    replies = [example.expected_answer for example in examples]
    return max(len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"])


def _row(example: Example, answer: str) -> EvaluationRow:
    prompt = example.prompt_chat()[-1]["content"] if example.prompt_chat() else ""
    expected = example.expected_answer
    return EvaluationRow(prompt, expected, answer, normalize_answer(answer) == normalize_answer(expected))
