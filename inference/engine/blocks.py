"""Linear layers that keep the GGUF's own blocks of 32 weights and multiply by them with
Parley's AVX2 kernels (``csrc/blocks.cpp``).

The bundled model's decoder is Q4_1 (per group of 32: 4-bit codes ``q``, and ``d``,
``m`` in fp16; the weight is ``q * d + m``) and its tied vocabulary head is Q8_0 (8-bit
codes and ``d``; the weight is ``q * d``). Our fp32 weights are those dequantized, so
the blocks can be read back from them exactly (``int4.q4_1_groups``, ``q8_0_groups``),
and the kernel rebuilds every weight bit for bit inside the product: the answers differ
from fp32's only by the order of the sums. A decode step reads about 6 bits a weight
instead of 32, which is what a step of one row waits for on a CPU.

Each output of the kernel is one sum in a fixed order whatever the number of rows or
threads, so a row's logits never depend on what shares its step; ``kernels.available`` checks
that on this machine before anything is served with it.

``kernels.py`` builds and checks the kernel; where it cannot, int4 falls back to torch's
int4 kernel (``int4.py``).

Every step, prefill chunks too, goes through the kernel: at 256 rows it is still faster
than unpacking the weights to fp32 for a GEMM (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import int4, kernels
from .invariance import SIBLINGS, _Joined

GROUP = kernels.GROUP


def q8_0_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, d)`` for a ``[N, K]`` weight read as Q8_0 groups of 32 along K: ``q`` int8
    in -127..127 and ``d`` fp32 ``[N, K / 32]``. ggml stores ``d = max|w| / 127`` in fp16
    and ``q = round(w / d)``, so the largest weight of a group is ``127 * d`` exactly and
    ``d`` comes back by dividing it by 127. Check with ``q8_0_is_exact``."""
    rows, columns = weight.shape
    groups = weight.detach().float().reshape(rows, columns // GROUP, GROUP)
    d = groups.abs().amax(-1) / 127
    safe = torch.where(d > 0, d, torch.ones_like(d))
    q = (groups / safe[..., None]).round().clamp(-127, 127)
    return q.to(torch.int8).reshape(rows, columns), d


def q8_0_rebuild(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    rows, columns = q.shape
    return (q.reshape(rows, columns // GROUP, GROUP).float() * d[..., None]).reshape(rows, columns)


def q8_0_is_exact(weight: torch.Tensor, q: torch.Tensor, d: torch.Tensor) -> bool:
    return torch.equal(d.half().float(), d) and torch.equal(q8_0_rebuild(q, d), weight.detach().float())


class BlockLinear(torch.nn.Module):
    """An ``nn.Linear`` whose weight is held in GGUF blocks (``kind`` ``"q4_1"`` or
    ``"q8_0"``); input and output fp32, bias kept."""

    codes: torch.Tensor
    scales: torch.Tensor

    def __init__(
        self,
        kind: str,
        codes: torch.Tensor,
        scales: torch.Tensor,
        in_features: int,
        out_features: int,
        bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._multiply: Any = None

    @classmethod
    def q4_1(
        cls, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None = None
    ) -> BlockLinear:
        out_features, in_features = q.shape
        scales = torch.stack([d, m], dim=-1).contiguous()
        return cls("q4_1", kernels.pack_q4_1(q), scales, in_features, out_features, bias)

    @classmethod
    def q8_0(cls, q: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None = None) -> BlockLinear:
        out_features, in_features = q.shape
        return cls("q8_0", q.contiguous(), d.contiguous(), in_features, out_features, bias)

    def unpack(self) -> torch.Tensor:
        """The fp32 ``[N, K]`` weight the kernel multiplies by."""
        ops = kernels.module()
        unpack = ops.q4_1_unpack if self.kind == "q4_1" else ops.q8_0_unpack
        return unpack(self.codes, self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A decode step calls ~120 of these: every torch call saved here counts.
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != torch.float32 or not rows.is_contiguous():
            rows = rows.float().contiguous()
        if self._multiply is None:
            self._multiply = getattr(kernels.module(), f"{self.kind}_mm")
        out = self._multiply(rows, self.codes, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.kind}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class BlockPart(torch.nn.Module):
    """One sibling of a joined ``BlockLinear`` (it keeps the sibling's name, sizes and
    place in the model, so LoRA hooks find it). The first part owns the joined layer;
    ``invariance._Joined`` computes it once for all the siblings. Each output is its
    own sum, so a part is the same bits as its layer alone would give."""

    def __init__(self, shared: _Joined, layer: BlockLinear, index: int) -> None:
        super().__init__()
        self.index = index
        self.in_features = layer.in_features
        self.out_features = shared.sizes[index]
        self.kind = layer.kind
        if index == 0:
            self.joined = layer
        self._shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared.part(self.index, x)


def join_siblings(model: Any) -> int:
    """Hold each group of sibling block layers (same kind and input, no bias) as one
    ``BlockLinear``; returns how many groups were joined."""
    joined = 0
    for module in list(model.modules()):
        for names in SIBLINGS:
            group = [getattr(module, name, None) for name in names]
            if not all(isinstance(layer, BlockLinear) and layer.bias is None for layer in group):
                continue
            layers: list[BlockLinear] = group  # type: ignore[assignment]
            if len({(layer.kind, layer.in_features) for layer in layers}) != 1:
                continue
            codes = torch.cat([layer.codes for layer in layers]).contiguous()
            scales = torch.cat([layer.scales for layer in layers]).contiguous()
            sizes = [layer.out_features for layer in layers]
            joined_layer = BlockLinear(layers[0].kind, codes, scales, layers[0].in_features, sum(sizes))
            shared = _Joined(joined_layer, layers)  # type: ignore[arg-type]
            for index, name in enumerate(names):
                setattr(module, name, BlockPart(shared, joined_layer, index))
            joined += 1
    return joined


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` did: layers held in blocks, and those kept fp32 with the reason."""

    q4_1: list[str]
    q8_0: list[str]
    kept: dict[str, str]

    def describe(self) -> str:
        kept = ", ".join(f"{name} ({why})" for name, why in self.kept.items())
        text = f"{len(self.q4_1)} linear layers Q4_1, {len(self.q8_0)} Q8_0 (Parley's AVX2 kernels)"
        return text + (f"; kept fp32: {kept}" if kept else "")


def convert(model: Any) -> Conversion:
    """Replace every linear layer whose weight is exactly Q4_1 or Q8_0 blocks with a
    ``BlockLinear``, in place. The vocabulary head is only replaced as a module, so an
    input embedding tied to it keeps its fp32 weight."""
    q4_1: list[str] = []
    q8_0: list[str] = []
    kept: dict[str, str] = {}
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    for name, layer in targets:
        if layer.in_features % GROUP:
            kept[name] = f"{layer.in_features} inputs are not whole groups of {GROUP}"
            continue
        q, d, m = int4.q4_1_groups(layer.weight)
        if int4.is_exact(layer.weight, q, d, m):
            replacement = BlockLinear.q4_1(q, d, m, layer.bias)
            q4_1.append(name)
        else:
            codes, scales = q8_0_groups(layer.weight)
            if not q8_0_is_exact(layer.weight, codes, scales):
                kept[name] = "weights are not Q4_1 or Q8_0 blocks"
                continue
            replacement = BlockLinear.q8_0(codes, scales, layer.bias)
            q8_0.append(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, replacement)
    join_siblings(model)
    return Conversion(q4_1, q8_0, kept)
