"""Parley's own CPU kernels (``csrc/``), for CPUs with AVX2 and FMA: products with the
GGUF's blocks of weights (``blocks.cpp``, served by ``blocks.py``) and decode attention
over each row's own keys (``attention.cpp``, used by ``invariance.kernel_attention``),
and RMSNorm in one pass (``norm.cpp``, ``install_norms``).

They exist because the library kernels either read 32-bit weights that the model stores
in 4 or 8 bits, or spend most of a decode step's attention on batched products of tiny
matrices. Each output of every kernel is one sum in a fixed order that depends only on
its own row, so a row's result never depends on what shares its step or on the number
of threads; ``available`` checks that on this machine before anything uses them.

The kernels are compiled with the machine's C++ compiler the first time they are needed
(``manage.py prepare_model`` does it at set-up; about a minute) into ``.cache/kernels``
(``PARLEY_KERNEL_DIR``), and loaded from there afterwards; a changed source is rebuilt.
The code is AVX2 without ``-march=native``, so a build runs on any x86 CPU with AVX2 and
FMA. Without those, or without a compiler, they are unavailable and
``unavailable_reason`` says why; the engine then serves what torch offers.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

import torch

from . import int4

GROUP = 32
SOURCES = [Path(__file__).with_name("csrc") / name for name in ("blocks.cpp", "attention.cpp", "norm.cpp")]
DEFAULT_BUILD_DIR = Path(__file__).resolve().parents[2] / ".cache" / "kernels"
# Row counts the start-up check tries (a decode step's, up to the engine's batch size).
CHECKED_ROWS = 16


def cpu_flags() -> set[str]:
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
    return found[0] if found else (None, "the kernels' build stopped with an error")


def _build_and_check() -> tuple[Any, str | None]:
    missing = {"avx2", "fma"} - cpu_flags()
    if missing:
        return None, f"the CPU lacks {', '.join(sorted(missing))}"
    build_dir = Path(os.environ.get("PARLEY_KERNEL_DIR") or DEFAULT_BUILD_DIR)
    try:
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        module = cpp_extension.load(
            name="parley_kernels",
            sources=[str(source) for source in SOURCES],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )
    except (OSError, RuntimeError, ImportError, ValueError) as error:
        text = str(error).strip()
        return None, f"the kernels did not build ({text.splitlines()[0] if text else type(error).__name__})"
    problem = _check_blocks(module) or _check_attention(module) or _check_norm(module)
    if problem:
        return None, problem
    return module, None


def pack_q4_1(q: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 ``[N, K]`` as ``q4_1_mm`` reads them, the GGUF's layout: per group of
    32, byte ``i`` holds code ``i`` (low nibble) and code ``i + 16`` (high nibble)."""
    rows, columns = q.shape
    groups = q.reshape(rows, columns // GROUP, GROUP).to(torch.uint8)
    return (groups[..., :16] | (groups[..., 16:] << 4)).reshape(rows, columns // 2).contiguous()


def _same_alone_and_together(compute: Any, rows: int) -> str | None:
    """``compute(start, stop)`` for rows ``start:stop``: the same bits for each row alone,
    in every batch of up to ``rows``, on one thread and on all of them."""
    threads = torch.get_num_threads()
    try:
        alone = [compute(row, row + 1) for row in range(rows)]
        for team in {1, threads}:
            torch.set_num_threads(team)
            for size in range(1, rows + 1):
                batch = compute(0, size)
                if not all(torch.equal(batch[row], alone[row][0]) for row in range(size)):
                    return f"a row's result changed with {size} rows on {team} threads"
    finally:
        torch.set_num_threads(threads)
    return None


def _check_blocks(module: Any) -> str | None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (7, 3 * GROUP), generator=generator, dtype=torch.int32)
    d = (torch.rand(7, 3, generator=generator) * 0.02).half().float()
    m = (-torch.rand(7, 3, generator=generator) * 0.1).half().float()
    codes = pack_q4_1(q)
    scales = torch.stack([d, m], dim=-1).contiguous()
    if not torch.equal(module.q4_1_unpack(codes, scales), int4.rebuild(q, d, m)):
        return "the kernel's Q4_1 weights differ from the GGUF reader's"
    x = torch.randn(CHECKED_ROWS, 3 * GROUP, generator=generator)
    return _same_alone_and_together(lambda a, b: module.q4_1_mm(x[a:b].contiguous(), codes, scales), CHECKED_ROWS)


def _check_attention(module: Any) -> str | None:
    generator = torch.Generator().manual_seed(1)
    rows, heads, kv_heads, dim, capacity = CHECKED_ROWS, 6, 2, 64, 80
    query = torch.randn(rows, heads, dim, generator=generator)
    key = torch.randn(rows, kv_heads, capacity, dim, generator=generator)
    value = torch.randn(rows, kv_heads, capacity, dim, generator=generator)
    lengths = torch.randint(1, capacity + 1, (rows,), generator=generator)
    scale = dim**-0.5
    allowed = torch.arange(capacity)[None, :] < lengths[:, None]
    expected = torch.nn.functional.scaled_dot_product_attention(
        query[:, :, None].double(),
        key.repeat_interleave(heads // kv_heads, dim=1).double(),
        value.repeat_interleave(heads // kv_heads, dim=1).double(),
        attn_mask=allowed[:, None, None, :],
        scale=scale,
    )[:, :, 0]
    found = module.decode_attention(query, key, value, lengths, scale)
    if not torch.allclose(found.double(), expected, atol=1e-5, rtol=1e-4):
        return "the attention kernel's results differ from SDPA's"
    return _same_alone_and_together(
        lambda a, b: module.decode_attention(query[a:b].contiguous(), key[a:b], value[a:b], lengths[a:b], scale), rows
    )


def _check_norm(module: Any) -> str | None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(CHECKED_ROWS, 96, generator=generator) * 3
    weight = torch.randn(96, generator=generator)
    expected = weight.double() * x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5)
    if not torch.allclose(module.rms_norm(x, weight, 1e-5).double(), expected, atol=1e-5, rtol=1e-5):
        return "the RMSNorm kernel's results differ from the formula's"
    return _same_alone_and_together(lambda a, b: module.rms_norm(x[a:b].contiguous(), weight, 1e-5), CHECKED_ROWS)


def available() -> bool:
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    return _load()[1]


def module() -> Any:
    """The compiled kernels; only call where ``available()``."""
    found, problem = _load()
    if found is None:
        raise RuntimeError(f"Parley's CPU kernels are unavailable: {problem}")
    return found


# Norm classes that compute exactly LlamaRMSNorm's ``weight * x / sqrt(mean(x^2) + eps)``
# in fp32 (others, such as Gemma's ``(1 + weight)``, keep their own forward).
SAME_AS_LLAMA_NORM = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"})


def _norm_forward(norm: Any, original: Any, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or not x.is_contiguous() or x.device.type != "cpu":
        return original(x)  # type: ignore[no-any-return]
    return module().rms_norm(x, norm.weight, norm.variance_epsilon)  # type: ignore[no-any-return]


def install_norms(model: Any) -> int:
    """Serve the model's RMSNorms (fp32 on the CPU) from ``rms_norm``: one call where
    transformers makes six. Returns how many; only call where ``available()``."""
    count = 0
    for norm in model.modules():
        weight = getattr(norm, "weight", None)
        if (
            type(norm).__name__ in SAME_AS_LLAMA_NORM
            and weight is not None
            and weight.dtype == torch.float32
            and weight.device.type == "cpu"
            and weight.dim() == 1
            and weight.numel() % 8 == 0
        ):
            norm.forward = functools.partial(_norm_forward, norm, norm.forward)
            count += 1
    return count


def build() -> str | None:
    """Compile (or load) the kernels now; returns why they are unavailable, or None."""
    return unavailable_reason()
