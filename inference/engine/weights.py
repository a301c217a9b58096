"""The form the model's weights are served in: fp32, or int8 dynamic quantization.

First measured on a 2-core AVX2 CPU (docs/performance.md, section "Inference engine";
``python -m bench.inference --weights-study``):

- int8 dynamic quantization (``torch.ao.quantization.quantize_dynamic``, fbgemm/x86
  kernels) makes the vocabulary head ~10x faster than fp32 and the layer matmuls 2-4x
  faster at batch sizes 1-16 and in prefill. Weight-only int8
  (``torch._weight_int8pack_mm``) was 10-100x slower than fp32 here, and
  ``torch.compile`` of the batched step slower than eager after a long compile.
- Quality, SmolLM2-135M-Instruct, greedy next token of 6 chat prompts x 40 positions
  (teacher-forced on the fp32 continuation): every linear int8 agrees with fp32 on
  only 38 % (per-tensor weights) / 48 % (per-channel) of positions -- answers change
  from the first words. The vocabulary head alone int8 agrees on 86 % (per-tensor);
  int8 in the transformer layers is what derails it (their activations have outliers
  that one per-batch activation scale cannot carry).

Every linear int8 after activation smoothing (``smoothing.py``: SmoothQuant's
per-channel rescaling, folded into the norms and projections, fp32-exact) agrees with
fp32 on 90 % of next tokens in the engine's own batched decode (8 chats x 48 tokens,
teacher-forced; int8 without smoothing: 73 %, vocabulary head alone int8: 92 %) and is
~3x faster than fp32 per decode step and per prefill chunk (2-core AVX-512 EPYC: 14.0
vs 41.2 ms a step at batch 1, 31.7 vs 88.5 at batch 16; bf16 28.2 / 38.2).

So the modes are ``"fp32"`` (exact), ``"int8-head"`` (only the vocabulary head int8,
per-channel), ``"int8"`` (every linear int8, per-channel weight scales, activations
smoothed first where the architecture allows it) and ``"auto"``, which picks
``"int8"`` on a CPU with a quantized engine for a model smoothing supports,
``"int8-head"`` on such a CPU otherwise, and fp32 elsewhere. A test bounds the
divergence of ``auto`` from fp32 on the bundled model.

Dynamic quantization picks one activation scale per matmul input, i.e. per batch, so
with int8 a request's logits can differ in the last bits depending on which requests
share its step. Use ``weights="fp32"`` where bit-for-bit reproducibility across batch
compositions matters.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from . import smoothing

WEIGHT_MODES = ("auto", "fp32", "int8-head", "int8")


def int8_supported() -> bool:
    engines = torch.backends.quantized.supported_engines
    return any(engine in engines for engine in ("x86", "fbgemm"))


def resolve_weights(mode: str, model: Any) -> str:
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {mode!r}.")
    on_cpu = next(model.parameters()).device.type == "cpu"
    if mode == "auto":
        if not (on_cpu and int8_supported()):
            return "fp32"
        return "int8" if smoothing.supports(model) else "int8-head"
    if mode.startswith("int8") and not (on_cpu and int8_supported()):
        raise ValueError("int8 weights need a CPU with the x86/fbgemm quantized engine.")
    return mode


def _linear_names(model: Any, mode: str) -> set[str]:
    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (mode == "int8" or module is head):
            names.add(name)
    return names


def prepare_weights(model: Any, mode: str, tokenizer: Any = None) -> tuple[Any, str, smoothing.Smoothing | None]:
    """Return ``(model, chosen_mode, smoothing)``; int8 modes replace linear layers in place.

    With ``"int8"``, a model that ``smoothing.supports`` is smoothed first, calibrated
    on a few built-in chats encoded with ``tokenizer``.
    """
    chosen = resolve_weights(mode, model)
    applied = None
    if chosen == "int8" and tokenizer is not None and smoothing.supports(model):
        applied = smoothing.smooth(model, smoothing.calibration_ids(tokenizer))
    if chosen.startswith("int8"):
        # Per-output-channel weight scales: closer to fp32 than one scale per matrix.
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        spec = {name: qconfig for name in _linear_names(model, chosen)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    return model, chosen, applied
