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
threads, so a row's logits never depend on what shares its step; ``available`` checks
that on this machine before anything is served with it.

The kernel is compiled with the machine's C++ compiler the first time it is needed
(``manage.py prepare_model`` does it at set-up; about 45 s) into ``.cache/kernels``
(``PARLEY_KERNEL_DIR``), and loaded from there afterwards. Without AVX2 and FMA, or
without a compiler, it is unavailable and ``available`` says why.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import int4

logger = logging.getLogger(__name__)

GROUP = 32
SOURCE = Path(__file__).with_name("csrc") / "blocks.cpp"
DEFAULT_BUILD_DIR = Path(__file__).resolve().parents[2] / ".cache" / "kernels"
# Row counts the start-up check tries (a decode step's, up to the engine's batch size).
# Every step, prefill chunks too, goes through the kernel: at 256 rows it is still faster
# than unpacking to fp32 for a GEMM (docs/performance.md, "int4 on Parley's kernels").
CHECKED_ROWS = 16


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def _load() -> tuple[Any, str | None]:
    """The compiled module, or None and why not. Built and checked on a thread of its
    own: the check runs OpenMP teams, and a team left on a long-lived thread slows every
    small parallel kernel of the engine's model thread (scheduler.in_own_thread)."""
    found: list[tuple[Any, str | None]] = []
    worker = threading.Thread(target=lambda: found.append(_build_and_check()), name="parley-kernels")
    worker.start()
    worker.join()
    return found[0] if found else (None, "the kernel's build stopped with an error")


def _build_and_check() -> tuple[Any, str | None]:
    missing = {"avx2", "fma"} - _cpu_flags()
    if missing:
        return None, f"the CPU lacks {', '.join(sorted(missing))}"
    build_dir = Path(os.environ.get("PARLEY_KERNEL_DIR") or DEFAULT_BUILD_DIR)
    try:
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        module = cpp_extension.load(
            name="parley_blocks",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )
    except (OSError, RuntimeError, ImportError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"the kernel did not build ({first_line})"
    problem = _self_check(module)
    if problem:
        return None, problem
    return module, None


def _self_check(module: Any) -> str | None:
    """Rebuilt weights are exact, and every row comes out the same alone, in a batch of
    up to ``CHECKED_ROWS`` rows, and on one thread or all of them."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (7, 3 * GROUP), generator=generator, dtype=torch.int32)
    d = (torch.rand(7, 3, generator=generator) * 0.02).half().float()
    m = (-torch.rand(7, 3, generator=generator) * 0.1).half().float()
    layer = BlockLinear.q4_1(q, d, m, module=module)
    if not torch.equal(layer.unpack(), int4.rebuild(q, d, m)):
        return "the kernel's Q4_1 weights differ from the GGUF reader's"
    codes, scales = q8_0_groups(int4.rebuild(q, d, m) - 0.05)
    if not torch.equal(module.q8_0_unpack(codes, scales), q8_0_rebuild(codes, scales)):
        return "the kernel's Q8_0 weights differ from the GGUF reader's"
    x = torch.randn(CHECKED_ROWS, 3 * GROUP, generator=generator)
    threads = torch.get_num_threads()
    try:
        alone = [module.q4_1_mm(x[row : row + 1].contiguous(), layer.codes, layer.scales) for row in range(len(x))]
        for team in {1, threads}:
            torch.set_num_threads(team)
            for rows in range(1, CHECKED_ROWS + 1):
                batch = module.q4_1_mm(x[:rows].contiguous(), layer.codes, layer.scales)
                if not all(torch.equal(batch[row], alone[row][0]) for row in range(rows)):
                    return f"a row's result changed with {rows} rows on {team} threads"
    finally:
        torch.set_num_threads(threads)
    return None


def available() -> bool:
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    return _load()[1]


def build() -> str | None:
    """Compile (or load) the kernel now; returns why it is unavailable, or None."""
    return unavailable_reason()


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


def pack_q4_1(q: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 ``[N, K]`` as the GGUF lays them out: per group of 32, byte ``i``
    holds code ``i`` (low nibble) and code ``i + 16`` (high nibble)."""
    rows, columns = q.shape
    groups = q.reshape(rows, columns // GROUP, GROUP).to(torch.uint8)
    return (groups[..., :16] | (groups[..., 16:] << 4)).reshape(rows, columns // 2).contiguous()


def unpack_q4_1(codes: torch.Tensor) -> torch.Tensor:
    rows, half = codes.shape
    groups = codes.reshape(rows, half // 16, 16)
    return torch.cat([groups & 15, groups >> 4], dim=-1).reshape(rows, half * 2).to(torch.int32)


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
        module: Any = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._module = module

    @classmethod
    def q4_1(
        cls, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None = None, module: Any = None
    ) -> BlockLinear:
        out_features, in_features = q.shape
        scales = torch.stack([d, m], dim=-1).contiguous()
        return cls("q4_1", pack_q4_1(q), scales, in_features, out_features, bias, module)

    @classmethod
    def q8_0(cls, q: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None = None, module: Any = None) -> BlockLinear:
        out_features, in_features = q.shape
        return cls("q8_0", q.contiguous(), d.contiguous(), in_features, out_features, bias, module)

    def unpack(self) -> torch.Tensor:
        """The fp32 ``[N, K]`` weight the kernel multiplies by."""
        kernels = self._module or _load()[0]
        unpack = kernels.q4_1_unpack if self.kind == "q4_1" else kernels.q8_0_unpack
        return unpack(self.codes, self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float().contiguous()
        kernels = self._module or _load()[0]
        multiply = kernels.q4_1_mm if self.kind == "q4_1" else kernels.q8_0_mm
        out = multiply(rows, self.codes, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.kind}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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
    return Conversion(q4_1, q8_0, kept)
