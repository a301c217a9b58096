"""Batch invariance: a request's logits never depend on what shares its decode step,
and the kernels that serve the float linear layers.

A decode step multiplies one row per request by each weight matrix. The kernels under
torch are chosen by the number of rows (and threads), and they sum in different
orders: on this project's AVX2 CPU, a row multiplied alone, or in a step of 2, 3, 5-7
or 9-11 rows, differs in its last bits from the same row in a step of 16, which is
enough to flip a greedy choice between two near-tied tokens. So every layer is served
by kernels probed at start-up (``safe_counts``): oneDNN's with weights prepacked once
(fp32, or bf16 on CPUs that multiply bf16 natively), else the default BLAS. Row counts
whose rows do not come out the same as in a full step are padded with zero rows up to
one that does (on the AVX-512 EPYC, one row alone goes through another oneDNN kernel
and is padded to two), and the padding is dropped from the output. A zero row costs
little: a decode step's time goes to reading the weights, which one more row does not
repeat. Sibling layers that read the same input (query, key and value; gate and up)
are served as one matrix.

Decode attention is the other place where rows meet; see the note before
``span_attention``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from . import kernels

logger = logging.getLogger(__name__)


Linear = Callable[..., torch.Tensor]


def default_linear(weight: torch.Tensor) -> Linear:
    """The default kernels (the BLAS under ``torch.nn.functional.linear``)."""

    def linear(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.linear(x, weight, bias)

    return linear


def safe_counts(
    shapes: set[tuple[int, int]],
    max_rows: int,
    teams: set[int],
    reference_threads: int,
    make: Callable[[torch.Tensor], Linear] = default_linear,
) -> dict[int, set[int]]:
    """For each thread count in ``teams``, the row counts 1..max_rows whose every row,
    for every weight shape, comes out equal to the same row computed in a ``max_rows``
    batch on ``reference_threads`` threads, with the kernels ``make`` builds."""
    safe = {team: set(range(1, max_rows + 1)) for team in teams}
    generator = torch.Generator().manual_seed(0)
    previous = torch.get_num_threads()
    try:
        for out_features, in_features in sorted(shapes):
            linear = make(torch.randn(out_features, in_features, generator=generator))
            rows = torch.randn(max_rows, in_features, generator=generator)
            torch.set_num_threads(reference_threads)
            reference = linear(rows)
            for team, counts in safe.items():
                torch.set_num_threads(team)
                for count in sorted(counts):
                    head = linear(rows[:count])
                    tail = linear(rows[-count:])
                    if not (torch.equal(head, reference[:count]) and torch.equal(tail, reference[-count:])):
                        counts.discard(count)
    finally:
        torch.set_num_threads(previous)
    return safe


def plan_for(safe: dict[int, set[int]], max_rows: int, threads_for: Callable[[int], int]) -> dict[int, int] | None:
    """Map each decode row count 1..max_rows to the smallest safe count at or above it
    on the threads that step runs on, or None when some count has none."""
    plan = {}
    for count in range(1, max_rows + 1):
        targets = [t for t in safe.get(threads_for(count), ()) if t >= count]
        if not targets:
            return None
        plan[count] = min(targets)
    return plan


def needs_padding(plan: dict[int, int]) -> bool:
    return any(target != rows for rows, target in plan.items())


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); elsewhere
    oneDNN emulates it, slower than fp32. torch does not say, so this reads the CPU's
    flags (Linux); elsewhere it answers no."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool({"avx512_bf16", "amx_bf16"} & set(line.partition(":")[2].split()))
    return False


def onednn_maker(rows_hint: int, dtype: torch.dtype = torch.float32) -> Callable[[torch.Tensor], Linear]:
    """Layers through oneDNN with weights prepacked once, in ``dtype``. In bf16 the
    input is rounded to bf16, the products are summed in fp32 by the kernel, and the
    output comes back as fp32, so everything between the linear layers (norms,
    attention, the residual stream) stays fp32."""

    def make(weight: torch.Tensor) -> Linear:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), rows_hint)
        if dtype == torch.float32:

            def linear(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
                return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")  # type: ignore[no-any-return]

            return linear

        def cast_linear(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
            out = torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, None, "none", [], "").float()
            return out if bias is None else out + bias

        return cast_linear

    return make


def cast_maker(dtype: torch.dtype) -> Callable[[torch.Tensor], Linear]:
    """Layers with ``dtype`` weights and fp32 inputs and outputs, on the default kernels
    (a GPU's, where nothing is prepacked)."""

    def make(weight: torch.Tensor) -> Linear:
        low = weight.detach().to(dtype)

        def linear(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
            out = torch.nn.functional.linear(x.to(dtype), low).float()
            return out if bias is None else out + bias

        return linear

    return make


def float_linears(model: Any) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32]


# Sibling layers that read the same input, served as one matrix: the attention's
# query, key and value projections, and the MLP's gate and up projections. One product
# reads the input once and saves two (or one) kernel calls of a decode step.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _units(model: Any) -> list[list[torch.nn.Linear]]:
    """The float linear layers as served: sibling groups first, then the rest alone."""
    float_layers = float_linears(model)
    floats = {id(layer) for layer in float_layers}
    units: list[list[torch.nn.Linear]] = []
    grouped: set[int] = set()
    for module in model.modules():
        for names in SIBLINGS:
            group = [getattr(module, name, None) for name in names]
            if (
                all(id(layer) in floats for layer in group)
                and len({layer.in_features for layer in group}) == 1  # type: ignore[union-attr]
                and all(layer.bias is None for layer in group)  # type: ignore[union-attr]
            ):
                units.append(group)  # type: ignore[arg-type]
                grouped.update(id(layer) for layer in group)
    units.extend([layer] for layer in float_layers if id(layer) not in grouped)
    return units


def output_head(model: Any) -> torch.nn.Linear | None:
    """The vocabulary head, where it is a float linear layer."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if head is not None and head in float_linears(model) else None


def served_shapes(model: Any, *, head: bool = True) -> set[tuple[int, int]]:
    """The weight shapes the kernels multiply by, siblings joined; without the
    vocabulary head's unless ``head``."""
    skip = None if head else output_head(model)
    return {
        (sum(layer.out_features for layer in unit), unit[0].in_features)
        for unit in _units(model)
        if unit[0] is not skip
    }


def install_linears(
    model: Any,
    make: Callable[[torch.Tensor], Linear],
    plan: dict[int, int] | None = None,
    head_make: Callable[[torch.Tensor], Linear] | None = None,
) -> int:
    """Serve the model's float linear layers through the kernels ``make`` builds,
    siblings as one matrix, their inputs padded as ``plan`` says (read at every call:
    the caller may change it in place); returns how many layers were changed. Inputs of
    more rows than the plan covers (prefill) pass as they are: a prompt is prefilled
    alone, so nothing else shares its rows. Forward hooks (LoRA) still see each layer's
    own input and output. ``head_make``, if given, builds the vocabulary head's kernels."""
    count = 0
    head = output_head(model)
    for unit in _units(model):
        if len(unit) == 1:
            layer = unit[0]
            linear = _padded((head_make if head_make is not None and layer is head else make)(layer.weight), plan)
            layer.forward = partial(_plain_forward, linear, layer)  # type: ignore[method-assign,assignment]
        else:
            joined = _Joined(_padded(make(torch.cat([layer.weight.detach() for layer in unit])), plan), unit)
            for index, layer in enumerate(unit):
                layer.forward = partial(joined.part, index)  # type: ignore[method-assign,assignment]
        count += len(unit)
    return count


class _Joined:
    """Sibling layers computed in one product: the first sibling's call computes every
    part; the others take theirs when called on the same input (as the model's forward
    does, in order), or compute it again if not."""

    def __init__(self, linear: Linear, layers: list[torch.nn.Linear]) -> None:
        self.linear = linear
        self.sizes = [layer.out_features for layer in layers]
        self.input: torch.Tensor | None = None
        self.parts: tuple[torch.Tensor, ...] = ()

    def part(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index == 0 or self.input is not x:
            self.parts = torch.split(self.linear(x), self.sizes, dim=-1)
            self.input = x
        part = self.parts[index]
        if index == len(self.sizes) - 1:
            self.input, self.parts = None, ()
        return part


def _plain_forward(linear: Linear, layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, layer.bias)


def _padded(linear: Linear, plan: dict[int, int] | None) -> Linear:
    if plan is None:
        return linear

    def forward(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        target = plan.get(rows, rows)
        if target == rows:
            return linear(x, bias)
        padded = x.new_zeros(target, x.shape[-1])
        padded[:rows] = x.reshape(rows, x.shape[-1])
        return linear(padded, bias)[:rows].reshape(*x.shape[:-1], -1)

    return forward


# Attention in a decode step: transformers runs one SDPA call over the whole batch,
# every row's keys cut to the longest row and the rest masked out, and the SDPA kernel
# sums in an order that changes with that length and with the thread count (the
# engine runs small steps on one thread). Two ways keep a row's attention its own:
#
# - "spans": one batched product over every row, the keys read up to the longest row
#   rounded up to SPAN (a whole number of kernel tiles). On the CPUs tried, a score's
#   sum over the head dimension then comes out the same whatever the span (with a
#   ragged span, the last partial tile goes through another kernel that sums in
#   another order), and the masked keys add exact zeros to the softmax and to the
#   weighted values. ``spans_are_invariant`` checks this at start-up.
# - "per row": each row attends over exactly its own keys with plain matmuls, 480 small
#   products a step at 16 rows and 30 layers; the fallback where the check fails.
PER_ROW_ATTENTION = "parley_ragged"
SPAN_ATTENTION = "parley_spans"
KERNEL_ATTENTION = "parley_kernel"
SPAN = 64


def _round_up(value: int, step: int = SPAN) -> int:
    return -(-value // step) * step


def _row_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """One decode row: query ``[heads, 1, dim]`` against its own ``[kv_heads, length, dim]``."""
    heads, _, dim = query.shape
    kv_heads = key.shape[0]
    grouped = query.reshape(kv_heads, heads // kv_heads, dim)
    weights = torch.softmax(torch.matmul(grouped, key.transpose(-1, -2)) * scale, dim=-1)
    return torch.matmul(weights, value).reshape(1, heads, dim)  # [q_len, heads, dim]


def span_attention_rows(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """Decode rows ``query [rows, heads, 1, dim]`` against ``key``/``value``
    ``[rows, kv_heads, >= span, dim]`` whose row ``i`` holds ``lengths[i]`` keys; reads
    each row up to the longest length rounded up to ``SPAN``. Returns
    ``[rows, 1, heads, dim]``."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    span = _round_up(int(lengths.max()))
    keys, values = key[:, :, :span], value[:, :, :span]
    grouped = query.reshape(rows, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)) * scale
    outside = torch.arange(span, device=query.device)[None, :] >= lengths[:, None]
    scores = scores.masked_fill_(outside[:, None, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, values).reshape(rows, 1, heads, dim)


def spans_are_invariant(kv_heads: int, groups: int, dim: int, max_rows: int, threads: set[int]) -> bool:
    """Whether ``span_attention_rows`` gives a row the same bits alone as among other
    rows of other lengths, on each thread count the engine uses."""
    generator = torch.Generator().manual_seed(0)
    previous = torch.get_num_threads()
    try:
        for longest in (70, 200, 700):
            lengths = torch.randint(1, longest, (max_rows,), generator=generator)
            span = _round_up(longest)
            key = torch.randn(max_rows, kv_heads, span, dim, generator=generator)
            value = torch.randn(max_rows, kv_heads, span, dim, generator=generator)
            query = torch.randn(max_rows, kv_heads * groups, 1, dim, generator=generator)
            torch.set_num_threads(max(threads))
            together = span_attention_rows(query, key, value, lengths, 0.125)
            for team in threads:
                torch.set_num_threads(team)
                slices = [(row, row + 1) for row in range(max_rows)] + [(0, 2), (3, 8), (5, max_rows)]
                for start, stop in [
                    (start, min(stop, max_rows)) for start, stop in slices if start < min(stop, max_rows)
                ]:
                    part = span_attention_rows(
                        query[start:stop], key[start:stop], value[start:stop], lengths[start:stop], 0.125
                    )
                    if not torch.equal(part, together[start:stop]):
                        return False
    finally:
        torch.set_num_threads(previous)
    return True


def _decode_rows(query: torch.Tensor, attention_mask: Any, kwargs: dict) -> bool:
    special = kwargs.get("sliding_window") or kwargs.get("softcap") or query.shape[1] % kwargs["kv_heads"]
    return query.shape[2] == 1 and isinstance(attention_mask, torch.Tensor) and not special


def ragged_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _decode_rows(query, attention_mask, {**kwargs, "kv_heads": key.shape[1]}):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # type: ignore[no-any-return]
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    # Decode rows hold their keys at 0..length-1; the additive mask allows exactly those.
    lengths = (attention_mask[:, 0, 0, :] == 0).sum(-1).tolist()
    rows = [
        _row_attention(query[row], key[row, :, :length], value[row, :, :length], scale)
        for row, length in enumerate(lengths)
    ]
    return torch.stack(rows), None


def span_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[torch.Tensor, None]:
    # The cache hands over its buffers cut to the longest row; they are allocated in
    # whole SPANs, so the view widens to the rounded span without a copy. Anything else
    # (prefill, other buffers) goes the per-row way, which hands prefill to SDPA.
    span = _round_up(key.shape[2])
    widens = key.stride(-1) == 1 and key.stride(2) == key.shape[-1] and key.stride(1) >= span * key.shape[-1]
    if not (widens and _decode_rows(query, attention_mask, {**kwargs, "kv_heads": key.shape[1]})):
        return ragged_attention(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    lengths = (attention_mask[:, 0, 0, :] == 0).sum(-1)
    wide = (key.shape[0], key.shape[1], span, key.shape[3])
    key = key.as_strided(wide, key.stride(), key.storage_offset())
    value = value.as_strided(wide, value.stride(), value.storage_offset())
    return span_attention_rows(query, key, value, lengths, scale), None


# Every layer of a step gets the same mask: its row lengths are counted once per step,
# per thread (each engine's model thread has its own).
_last_lengths = threading.local()


def _row_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """How many keys each decode row holds (the additive mask allows exactly those)."""
    last = getattr(_last_lengths, "pair", None)
    if last is None or last[0] is not attention_mask:
        last = (attention_mask, (attention_mask[:, 0, 0, :] == 0).sum(-1))
        _last_lengths.pair = last
    return last[1]  # type: ignore[no-any-return]


def kernel_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[torch.Tensor, None]:
    """Decode rows through Parley's attention kernel (``kernels.py``), which reads each
    row's own keys straight from the cache; anything else goes the per-row way."""
    fits = (
        query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.float32
        and key.stride(-1) == 1
        and value.stride(-1) == 1
    )
    if not (fits and _decode_rows(query, attention_mask, {**kwargs, "kv_heads": key.shape[1]})):
        return ragged_attention(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling") or query.shape[-1] ** -0.5
    lengths = _row_lengths(attention_mask)
    rows, heads, _, dim = query.shape
    out = kernels.module().decode_attention(query.reshape(rows, heads, dim).contiguous(), key, value, lengths, scale)
    return out.reshape(rows, 1, heads, dim), None


def install_ragged_attention(model: Any, spans: bool = False, kernel: bool = False) -> bool:
    """Route the model's decode attention through Parley's kernel (``kernel``),
    ``span_attention`` (``spans``) or ``ragged_attention`` where it uses SDPA."""
    from transformers import AttentionInterface

    config = model.config
    ours = (PER_ROW_ATTENTION, SPAN_ATTENTION, KERNEL_ATTENTION)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", *ours):
        return False
    name = KERNEL_ATTENTION if kernel else SPAN_ATTENTION if spans else PER_ROW_ATTENTION
    AttentionInterface.register(PER_ROW_ATTENTION, ragged_attention)
    AttentionInterface.register(SPAN_ATTENTION, span_attention)
    AttentionInterface.register(KERNEL_ATTENTION, kernel_attention)
    config._attn_implementation = name
    for sub in model.modules():  # layers that copied the name when they were built
        sub_config = getattr(sub, "config", None)
        if sub_config is not None and sub_config is not config:
            sub_config._attn_implementation = name
    return True
