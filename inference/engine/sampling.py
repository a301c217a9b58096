"""Choosing the next token per request: greedy, temperature and nucleus (top-p) sampling,
after presence and frequency penalties on the tokens the reply already has; and, for
requests that ask, the chosen tokens' log probabilities under the model's own logits.

Every sampled request owns a ``torch.Generator``; a row is sampled from its own logits
with its own generator, so a seeded request draws the same tokens whatever else shares
its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """One token id from a 1-D row of logits (a reply's first: nothing to penalize yet)."""
    return sample_batch(logits[None, :], [params], [generator])[0]


def sample_batch(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator],
    generated: list[Sequence[int]] | None = None,
) -> list[int]:
    """One token per row of ``logits`` ``[rows, vocab]``; ``generated`` holds each
    row's reply so far where its request has penalties (other rows may be empty).

    Greedy rows share one argmax. Sampled rows are handled together: one softmax, one
    sort for the rows with a nucleus (top_p < 1), one cumulative sum, and one
    inverse-CDF lookup of a uniform number each row draws from its own generator. A
    row's draw depends only on its logits, its settings and its generator, never on
    its neighbours, so a seeded request repeats itself in any batch. (Sampling row by
    row took ~1.2 ms a row per step: 30 % of a 16-row int8 decode step.)
    """
    if generated is not None:
        logits = _penalize(logits, params, generated)
    chosen = torch.argmax(logits, dim=-1).tolist()
    nucleus = [row for row, p in enumerate(params) if p.temperature > 0 and p.top_p < 1.0]
    plain = [row for row, p in enumerate(params) if p.temperature > 0 and p.top_p >= 1.0]
    for rows, sort in ((nucleus, True), (plain, False)):
        if rows:
            picks = _draw(logits, rows, [params[r] for r in rows], [generators[r] for r in rows], sort=sort)
            for row, token in zip(rows, picks, strict=True):
                chosen[row] = token
    return chosen


def token_logprobs(
    logits: torch.Tensor, tokens: list[int], tops: list[int]
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per row of ``logits`` ``[rows, vocab]``: the log probability of ``tokens[row]``
    and the ``tops[row]`` most likely ``(token, logprob)``, most likely first.

    The distribution is the model's own (one log-softmax of the logits as they are:
    no temperature, nucleus or penalty), which is what OpenAI's API reports.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(tokens, dtype=torch.long)[:, None])[:, 0].tolist()
    values, ids = torch.topk(logprobs, min(max(tops), logprobs.shape[-1]), dim=-1)
    top_values, top_ids = values.tolist(), ids.tolist()
    return [
        (chosen[row], list(zip(top_ids[row][: tops[row]], top_values[row][: tops[row]], strict=True)))
        for row in range(len(tokens))
    ]


def _penalize(logits: torch.Tensor, params: list[SamplingParams], generated: list[Sequence[int]]) -> torch.Tensor:
    """``logits`` with each penalized row's reply tokens lowered (a copy if any change)."""
    rows = [row for row, p in enumerate(params) if p.penalized and generated[row]]
    if not rows:
        return logits
    logits = logits.float().clone()
    for row in rows:
        tokens, counts = torch.unique(torch.tensor(generated[row], dtype=torch.long), return_counts=True)
        p = params[row]
        logits[row, tokens] -= counts.float() * p.frequency_penalty + p.presence_penalty
    return logits


# A nucleus is looked for among the most likely tokens first: a full sort of a
# 49,152-token vocabulary costs ~3 ms a row here, the top 256 a small fraction of that.
_NUCLEUS_CANDIDATES = 256


def _draw(
    logits: torch.Tensor,
    rows: list[int],
    params: list[SamplingParams],
    generators: list[torch.Generator],
    *,
    sort: bool,
) -> list[int]:
    temperatures = torch.tensor([p.temperature for p in params], dtype=torch.float32)
    picked = logits if len(rows) == logits.shape[0] else logits[rows]
    probs = torch.softmax(picked.float() / temperatures[:, None], dim=-1)
    draws = torch.cat([torch.rand(1, generator=generator) for generator in generators])
    if not sort:
        return _inverse_cdf(probs, draws).tolist()
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
    candidates, order = torch.topk(probs, min(_NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    covered = candidates.sum(dim=-1) >= top_p
    if not bool(covered.all()):
        # Some nucleus reaches past the candidates: sort the whole vocabulary for them.
        candidates, order = torch.sort(probs, dim=-1, descending=True)
    # Keep the smallest set whose mass reaches top_p (the first token always stays).
    kept = candidates.masked_fill((candidates.cumsum(dim=-1) - candidates) >= top_p[:, None], 0.0)
    picks = _inverse_cdf(kept, draws)
    return order.gather(1, picks[:, None])[:, 0].tolist()


def _inverse_cdf(probs: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Per row, the token where the cumulative mass passes ``draw * total``."""
    cdf = probs.cumsum(dim=-1)
    targets = (draws * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[-1] - 1)[:, 0]
