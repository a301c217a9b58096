"""Batch invariance: a request's logits never depend on what shares its decode step.

A decode step multiplies one row per request by each weight matrix. The BLAS under
torch picks its kernel by the number of rows (and threads), and the kernels sum in
different orders: on this project's AVX2 CPU, a row multiplied alone, or in a step of
2, 3, 5-7 or 9-11 rows, differs in its last bits from the same row in a step of 16,
which is enough to flip a greedy choice between two near-tied tokens. So each float
linear layer pads its input with zero rows up to a row count whose kernel gives the
same bits as every other used count ("safe" counts, found by ``probe`` on this
machine at start-up), and drops the padding from its output. A zero row costs little:
a decode step's time goes to reading the weights, which one more row does not repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

logger = logging.getLogger(__name__)


def probe(
    shapes: set[tuple[int, int]], max_rows: int, threads_for: Callable[[int], int], reference_threads: int
) -> dict[int, int] | None:
    """Map each decode row count 1..max_rows to the count to pad it to, or None when
    this machine's kernels give no common result (then nothing is padded).

    A padded step keeps the threads its real rows chose (``threads_for``). A count is
    safe on a number of threads when every row of every weight shape comes out equal
    to the same row computed in a ``max_rows`` batch on ``reference_threads`` threads.
    """
    teams = {threads_for(count) for count in range(1, max_rows + 1)}
    safe = {team: set(range(1, max_rows + 1)) for team in teams}
    generator = torch.Generator().manual_seed(0)
    previous = torch.get_num_threads()
    try:
        for out_features, in_features in sorted(shapes):
            weight = torch.randn(out_features, in_features, generator=generator)
            rows = torch.randn(max_rows, in_features, generator=generator)
            torch.set_num_threads(reference_threads)
            reference = torch.nn.functional.linear(rows, weight)
            for team, counts in safe.items():
                torch.set_num_threads(team)
                for count in sorted(counts):
                    head = torch.nn.functional.linear(rows[:count], weight)
                    tail = torch.nn.functional.linear(rows[-count:], weight)
                    if not (torch.equal(head, reference[:count]) and torch.equal(tail, reference[-count:])):
                        counts.discard(count)
    finally:
        torch.set_num_threads(previous)
    plan = {}
    for count in range(1, max_rows + 1):
        targets = [t for t in safe[threads_for(count)] if t >= count]
        if not targets:
            return None
        plan[count] = min(targets)
    return plan


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_linear(weight: torch.Tensor, rows_hint: int) -> Callable[[torch.Tensor], torch.Tensor]:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)

    def linear(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")  # type: ignore[no-any-return]

    return linear


def onednn_is_invariant(
    shapes: set[tuple[int, int]], max_rows: int, threads_for: Callable[[int], int], reference_threads: int
) -> bool:
    """Whether oneDNN's linear with prepacked weights gives every row the same bits for
    every row count and thread count the engine uses (it did on every CPU tried: its
    kernels sum each output over the packed weight's fixed blocks, whatever the rows)."""
    generator = torch.Generator().manual_seed(0)
    previous = torch.get_num_threads()
    try:
        for out_features, in_features in sorted(shapes):
            linear = _onednn_linear(torch.randn(out_features, in_features, generator=generator), max_rows)
            rows = torch.randn(max_rows, in_features, generator=generator)
            torch.set_num_threads(reference_threads)
            reference = linear(rows)
            for count in range(1, max_rows + 1):
                torch.set_num_threads(threads_for(count))
                if not (torch.equal(linear(rows[:count]), reference[:count]) and torch.equal(linear(rows[-count:]), reference[-count:])):
                    return False
    finally:
        torch.set_num_threads(previous)
    return True


def install_onednn(model: Any, rows_hint: int) -> int:
    """Serve the model's float linear layers through oneDNN with prepacked weights."""
    layers = float_linears(model)
    for layer in layers:
        linear = _onednn_linear(layer.weight.detach(), rows_hint)
        layer.forward = partial(_onednn_forward, linear, layer)  # type: ignore[method-assign,assignment]
    return len(layers)


def _onednn_forward(linear: Callable[..., torch.Tensor], layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, layer.bias)


def float_linears(model: Any) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32]


def install_padding(model: Any, plan: dict[int, int]) -> int:
    """Pad the inputs of the model's float linear layers as ``plan`` says; returns how
    many layers were changed. Inputs of more rows than the plan covers (prefill) pass
    as they are: a prompt is prefilled alone, so nothing else shares its rows."""
    layers = float_linears(model)
    for layer in layers:
        layer.forward = _padded(layer, plan)  # type: ignore[method-assign,assignment]
    return len(layers)


def _padded(layer: torch.nn.Linear, plan: dict[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    linear = torch.nn.functional.linear

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        target = plan.get(rows, rows)
        if target == rows:
            return linear(x, layer.weight, layer.bias)
        padded = x.new_zeros(target, x.shape[-1])
        padded[:rows] = x.reshape(rows, x.shape[-1])
        return linear(padded, layer.weight, layer.bias)[:rows].reshape(*x.shape[:-1], -1)

    return forward


# Attention in a decode step: transformers runs one SDPA call over the whole batch,
# every row's keys cut to the longest row and the rest masked out, and the SDPA kernel
# sums in an order that changes with that length and with the thread count (the
# engine runs small steps on one thread). Each row here attends over exactly its own
# keys, with plain matmuls and a softmax whose results do not depend on either: the
# same arithmetic whether the row is alone or among fifteen others.
RAGGED_ATTENTION = "parley_ragged"


def _row_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """One decode row: query ``[heads, 1, dim]`` against its own ``[kv_heads, length, dim]``."""
    heads, _, dim = query.shape
    kv_heads = key.shape[0]
    grouped = query.reshape(kv_heads, heads // kv_heads, dim)
    weights = torch.softmax(torch.matmul(grouped, key.transpose(-1, -2)) * scale, dim=-1)
    return torch.matmul(weights, value).reshape(1, heads, dim)  # [q_len, heads, dim]


def ragged_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    special = kwargs.get("sliding_window") or kwargs.get("softcap") or query.shape[1] % key.shape[1]
    if query.shape[2] != 1 or not isinstance(attention_mask, torch.Tensor) or special:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # type: ignore[no-any-return]
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    # Decode rows hold their keys at 0..length-1; the additive mask allows exactly those.
    lengths = (attention_mask[:, 0, 0, :] == 0).sum(-1).tolist()
    rows = [
        _row_attention(query[row], key[row, :, :length], value[row, :, :length], scale)
        for row, length in enumerate(lengths)
    ]
    return torch.stack(rows), None


def install_ragged_attention(model: Any) -> bool:
    """Route the model's attention through ``ragged_attention`` where it uses SDPA."""
    from transformers import AttentionInterface

    config = model.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", RAGGED_ATTENTION):
        return False
    AttentionInterface.register(RAGGED_ATTENTION, ragged_attention)
    config._attn_implementation = RAGGED_ATTENTION
    for sub in model.modules():  # layers that copied the name when they were built
        sub_config = getattr(sub, "config", None)
        if sub_config is not None and sub_config is not config:
            sub_config._attn_implementation = RAGGED_ATTENTION
    return True
