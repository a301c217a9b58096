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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.engine.answers import EvaluationRow, answer_row, generate_answers, longest_reply_tokens
from inference.engine.datasets import Example
from inference.engine.training import score_examples


@dataclass
class EvaluationResult:
    examples: int
    exact_match: float  # share of examples, 0..1
    token_accuracy: float  # share of expected reply tokens, 0..1
    loss: float  # teacher-forced, per expected reply token
    rows: list[EvaluationRow]


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
    limit = max_new_tokens or longest_reply_tokens(tokenizer, examples) + 8
    answers = generate_answers(model, tokenizer, examples, max_new_tokens=limit, batch_size=batch_size)
    rows = [answer_row(example, answer) for example, answer in zip(examples, answers, strict=True)]
    loss, accuracy = score_examples(model, tokenizer, examples)
    exact = sum(row.exact for row in rows) / len(rows)
    return EvaluationResult(len(rows), exact, accuracy, loss, rows)


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
