"""Choosing the next token per request: greedy, temperature and nucleus (top-p) sampling.

Every sampled request owns a ``torch.Generator``; a row is sampled from its own logits
with its own generator, so a seeded request draws the same tokens whatever else shares
its batch.
"""

from __future__ import annotations

import torch

from .types import SamplingParams


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token id from a 1-D row of logits."""
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        sorted_probs[(cumulative - sorted_probs) >= params.top_p] = 0.0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_batch(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """One token per row of ``logits`` ``[rows, vocab]``; greedy rows share one argmax."""
    greedy = torch.argmax(logits, dim=-1).tolist()
    return [
        greedy[row] if p.temperature <= 0 else sample_row(logits[row], p, generators[row])
        for row, p in enumerate(params)
    ]
