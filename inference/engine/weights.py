"""The form the model's weights are served in: fp32 or int8 dynamic quantization.

Measured on the 2-core AVX2 CPU this project runs on (see docs/performance.md, section
"Inference engine", and ``python -m bench.inference``): int8 dynamic quantization of
every ``nn.Linear`` (``torch.ao.quantization.quantize_dynamic``, fbgemm/x86 kernels)
makes the vocabulary head ~10x and the layer matmuls 2-4x faster than fp32 at batch
sizes 1-16 and for prefill; weight-only int8 (``torch._weight_int8pack_mm``) was
10-100x slower than fp32 here, and ``torch.compile`` of the batched step was slower
than eager with a long compile. So ``"auto"`` means int8 where a quantized CPU engine
exists, fp32 otherwise.

Trade-off, stated plainly: dynamic quantization picks one activation scale per
matmul input, i.e. per batch, so with int8 weights a request's logits can differ in the
last bits depending on which requests share its step; greedy output then can differ
from the same request run alone after some tokens. Use ``weights="fp32"`` where
bit-for-bit reproducibility across batch compositions matters.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

WeightsMode = Literal["auto", "fp32", "int8"]
WEIGHT_MODES = ("auto", "fp32", "int8")


def int8_supported() -> bool:
    engines = torch.backends.quantized.supported_engines
    return any(engine in engines for engine in ("x86", "fbgemm"))


def resolve_weights(mode: str, model: Any) -> str:
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {mode!r}.")
    on_cpu = next(model.parameters()).device.type == "cpu"
    if mode == "auto":
        return "int8" if on_cpu and int8_supported() else "fp32"
    if mode == "int8" and not (on_cpu and int8_supported()):
        raise ValueError("int8 weights need a CPU with the x86/fbgemm quantized engine.")
    return mode


def prepare_weights(model: Any, mode: str) -> tuple[Any, str]:
    """Return ``(model, chosen_mode)``; int8 replaces every ``nn.Linear`` in place."""
    chosen = resolve_weights(mode, model)
    if chosen == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model, chosen
