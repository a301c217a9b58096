"""Weight-only int4 linear layers, rebuilt exactly from the bundled GGUF's 4-bit blocks.

The bundled model ships as Q4_1: each group of 32 weights along a row is stored as
``w = q * d + m`` with ``q`` in 0..15 and ``d``, ``m`` in fp16, and our fp32 weights are
that dequantization. So for each group the minimum is ``m`` (some weight has ``q = 0``)
and the maximum is ``15 * d + m``: ``d`` and ``m`` come back from the fp32 weights, and
``q * d + m`` must give the same fp32 bits again. Layers where it does are served from
torch's CPU int4 kernel, which reads 4 bits a weight instead of 32 and computes
``(q - 8) * scale + zero`` per group (so ``scale = d``, ``zero = m + 8 * d``). The result
differs from fp32 only by the rounding of ``zero`` and the order of the sums.

Layers whose weights were not Q4_1 (the tied vocabulary head is Q8_0 in the GGUF) stay
fp32: a lossy requantization would change answers for the sake of speed, and the
fidelity bar (weights.py) is the point.

Activations stay fp32. Steps of more rows than a decode step can hold (``kernel_rows``:
the engine's batch size, at least ``KERNEL_ROWS``), that is prefill chunks, unpack the
weights to fp32 for one matmul instead: torch's int4 kernel on a CPU without AVX-512 is
a scalar loop whose cost grows with every row, which would make a 256-token prefill
chunk take many seconds. Every decode step uses the kernel, whose every row comes out
the same whatever shares the step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

GROUP = 32
# Torch packs the output features in blocks of 32 on CPUs without AVX-512 and of 64 on
# those with it; ``packing_block`` finds which, and ``unpack`` and ``fits`` follow it.
BLOCK_SIZES = (32, 64)
# Torch's packing splits K into "inner tiles"; 2 is what its own CPU tests use.
INNER_K_TILES = 2
# Steps up to this many rows (or the engine's batch size, if larger) use the kernel;
# larger steps (prefill) unpack.
KERNEL_ROWS = 16


@functools.cache
def packing_block() -> int:
    """The block of output features torch's int4 packing uses on this CPU: a known
    pattern is packed and read back with each layout it may use."""
    rows, columns = max(BLOCK_SIZES), 2 * GROUP
    q = (torch.arange(rows)[:, None] * 7 + torch.arange(columns)[None, :] * 3).remainder(16).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, INNER_K_TILES)
    for block in BLOCK_SIZES:
        if torch.equal(_unpack_codes(packed, rows, columns, block), q):
            return block
    raise RuntimeError("torch's int4 packing on this CPU has a layout Parley does not read")


def _unpack_codes(packed: torch.Tensor, rows: int, columns: int, block: int) -> torch.Tensor:
    """The 0..15 codes ``[rows, columns]`` of a packed weight whose output features are
    in blocks of ``block``: byte j of input k in a block holds output j (low nibble) and
    output j + block / 2 (high nibble)."""
    blocks = packed.reshape(rows // block, columns, block // 2)
    codes = torch.cat([blocks & 15, blocks >> 4], dim=-1).transpose(1, 2)
    return codes.reshape(rows, columns).to(torch.int32)


def kernel_available() -> bool:
    """Whether this torch has the CPU int4 kernels and they run."""
    ops = torch.ops.aten
    if not (hasattr(ops, "_convert_weight_to_int4pack_for_cpu") and hasattr(ops, "_weight_int4pack_mm_for_cpu")):
        return False
    try:
        rows = max(BLOCK_SIZES)
        layer = Int4Linear.from_groups(*q4_1_groups(torch.arange(rows * GROUP, dtype=torch.float32).view(rows, GROUP) / 64))
        layer(torch.ones(1, GROUP))
        packing_block()
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False
    return True


def q4_1_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, d, m)`` for a ``[N, K]`` weight read as groups of 32 along K: ``q`` int32
    ``[N, K]`` in 0..15, ``d`` and ``m`` fp32 ``[N, K / 32]`` (fp16 values, as Q4_1
    stores them). ``is_exact`` says whether they give the weight back."""
    rows, columns = weight.shape
    groups = weight.detach().float().reshape(rows, columns // GROUP, GROUP)
    low = groups.amin(-1)
    high = groups.amax(-1)
    scale = ((high - low) / 15).half().float()
    steps = torch.where(scale[..., None] > 0, (groups - low[..., None]) / scale[..., None], torch.zeros_like(groups))
    q = steps.round().clamp(0, 15).to(torch.int32).reshape(rows, columns)
    return q, scale, low


def rebuild(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``q * d + m`` in fp32, as the GGUF reader dequantized Q4_1."""
    rows, columns = q.shape
    groups = q.reshape(rows, columns // GROUP, GROUP).float()
    return (groups * d[..., None] + m[..., None]).reshape(rows, columns)


def is_exact(weight: torch.Tensor, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> bool:
    return torch.equal(rebuild(q, d, m), weight.detach().float())


def fits(layer: torch.nn.Linear) -> bool:
    return layer.in_features % GROUP == 0 and layer.out_features % packing_block() == 0


class Int4Linear(torch.nn.Module):
    """An ``nn.Linear`` whose weight is held as torch's packed int4 with one scale and
    zero per group of 32 inputs; input and output fp32, bias kept."""

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(
        self,
        packed: torch.Tensor,
        scales_and_zeros: torch.Tensor,
        in_features: int,
        out_features: int,
        bias: torch.Tensor | None,
        kernel_rows: int = KERNEL_ROWS,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_rows = kernel_rows
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_groups(
        cls,
        q: torch.Tensor,
        d: torch.Tensor,
        m: torch.Tensor,
        bias: torch.Tensor | None = None,
        kernel_rows: int = KERNEL_ROWS,
    ) -> Int4Linear:
        out_features, in_features = q.shape
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), INNER_K_TILES)
        # Kernel's form per group: (q - 8) * scale + zero; ours: q * d + m.
        zero = m + 8 * d
        scales_and_zeros = torch.stack([d, zero], dim=-1).transpose(0, 1).contiguous()
        return cls(packed, scales_and_zeros, in_features, out_features, bias, kernel_rows)

    def unpack(self) -> torch.Tensor:
        """The fp32 ``[N, K]`` weight the kernel multiplies by."""
        q = _unpack_codes(self.packed, self.out_features, self.in_features, packing_block())
        scale, zero = self.scales_and_zeros.transpose(0, 1).unbind(-1)
        groups = q.reshape(self.out_features, -1, GROUP).float() - 8
        return (groups * scale[..., None] + zero[..., None]).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > self.kernel_rows:
            out = torch.nn.functional.linear(rows, self.unpack())
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows.contiguous(), self.packed, GROUP, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={GROUP}, bias={self.bias is not None}"


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` did: layers packed, and those kept fp32 with the reason."""

    packed: list[str]
    kept: dict[str, str]

    def describe(self) -> str:
        kept = ", ".join(f"{name} ({why})" for name, why in self.kept.items())
        return f"{len(self.packed)} linear layers int4" + (f"; kept fp32: {kept}" if kept else "")


def convert(model: Any, max_rows: int = KERNEL_ROWS) -> Conversion:
    """Replace every linear layer whose weight is exactly Q4_1 with an ``Int4Linear``,
    in place, whose kernel takes every step of up to ``max_rows`` rows (the engine's
    largest decode step) and at least ``KERNEL_ROWS``. The vocabulary head is only
    replaced as a module, so an input embedding tied to it keeps its fp32 weight."""
    packed: list[str] = []
    kept: dict[str, str] = {}
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    for name, layer in targets:
        if not fits(layer):
            kept[name] = f"shape {layer.out_features}x{layer.in_features} does not fit groups of {GROUP} and blocks of {packing_block()}"
            continue
        q, d, m = q4_1_groups(layer.weight)
        if not is_exact(layer.weight, q, d, m):
            kept[name] = "weights are not 4-bit groups"
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int4Linear.from_groups(q, d, m, layer.bias, max(KERNEL_ROWS, max_rows)))
        packed.append(name)
    return Conversion(packed, kept)
