"""How closely a served weight form keeps the model's own answers.

The reference is the model in fp32. ``teacher_forced_logprobs`` feeds a reply (fp32's
greedy one, usually) through an engine's own serving path -- each prompt prefilled
in chunks on its own row, then every continuation decoded together in one batch, as
requests are -- and returns the log-probabilities the engine's weights give at each
position. ``compare`` turns two such lists into the usual yardsticks: top-1 agreement
and the mean KL divergence KL(reference || form) per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scheduler import Engine


def teacher_forced_logprobs(
    engine: Engine,
    prompts: list[list[int]],
    continuations: list[list[int]],
    adapters: list[str | None] | None = None,
) -> list[torch.Tensor]:
    """For each prompt, ``[len(continuation), vocab]`` log-probabilities of the next
    token at each position of its continuation, while being fed that continuation.

    Rows whose continuation is shorter keep being fed their last token so the batch
    stays whole; what they produce past their own length is dropped.
    """
    if len(prompts) != len(continuations) or not prompts or not all(continuations):
        raise ValueError("Give one non-empty continuation per prompt.")
    steps = max(len(c) for c in continuations)
    adapters = adapters or [None] * len(prompts)
    outputs: list[list[torch.Tensor]] = [[] for _ in prompts]
    with engine._model_lock:
        # 1. Prefill each prompt alone, in the engine's chunks; its last logits score
        #    the continuation's first token.
        batch = engine._new_cache(len(prompts))
        for row, prompt in enumerate(prompts):
            single = engine._new_cache(1)
            single.add_empty_row()
            for start in range(0, len(prompt), engine.prefill_chunk_tokens):
                chunk = prompt[start : start + engine.prefill_chunk_tokens]
                logits = engine._forward(single, [chunk], [adapters[row]], prefill=True)
            outputs[row].append(torch.log_softmax(logits[0], -1))
            batch.add_row(single, 0)
        # 2. Decode all rows together, feeding each its own continuation.
        for step in range(steps - 1):
            fed = [[c[min(step, len(c) - 1)]] for c in continuations]
            logits = engine._forward(batch, fed, adapters)
            for row, continuation in enumerate(continuations):
                if step + 1 < len(continuation):
                    outputs[row].append(torch.log_softmax(logits[row], -1))
    return [torch.stack(rows) for rows in outputs]


@dataclass(frozen=True)
class Agreement:
    positions: int
    top1: float  # share of positions where both pick the same most likely token
    mean_kl: float  # nats per token, KL(reference || form)
    max_kl: float


def compare(reference: list[torch.Tensor], form: list[torch.Tensor]) -> Agreement:
    """Top-1 agreement and KL divergence of ``form`` from ``reference``, position by position."""
    same, positions, kl_sum, kl_max = 0, 0, 0.0, 0.0
    for ref, got in zip(reference, form, strict=True):
        kl = (ref.exp() * (ref - got)).sum(-1).clamp_min(0)
        same += int((ref.argmax(-1) == got.argmax(-1)).sum())
        positions += ref.shape[0]
        kl_sum += float(kl.sum())
        kl_max = max(kl_max, float(kl.max()))
    return Agreement(positions=positions, top1=same / positions, mean_kl=kl_sum / positions, max_kl=kl_max)
