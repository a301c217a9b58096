"""The form the model's weights are served in, and how ``auto`` chooses one.

Forms: ``"fp32"`` (the reference: the bundled GGUF's 4-bit weights dequantized
exactly), ``"bf16"`` (the decoder's linear layers multiply bf16 weights by inputs
rounded to bf16, summing in fp32 and rounding each output to bf16, on CPUs that do
this natively: AVX512-BF16 or AMX; the vocabulary head, norms, attention and the
residual stream stay fp32),
``"int8-head"`` (only the vocabulary head int8) and ``"int8"`` (every
linear layer int8 after SmoothQuant-style smoothing, ``smoothing.py``), both through
``torch.ao.quantization.quantize_dynamic`` with per-channel weight scales, and
``"int4"`` (weight-only: the GGUF's own blocks, Q4_1 in the decoder and Q8_0 in the
vocabulary head, multiplied by Parley's AVX2 kernels, ``blocks.py``; where those cannot
run, the 4-bit groups go to torch's CPU int4 kernel, ``int4.py``, and the head stays
fp32), which gives the fp32 weights back bit for bit and differs from fp32 only in the
order of the sums.

Fast is worth nothing if the replies change, so ``auto`` serves the fastest form this
machine can run *that keeps the model's answers*: mean KL divergence from fp32 at most
``MAX_MEAN_KL``, top-1 agreement at least ``MIN_TOP1`` (teacher-forced through the
batched decode), and batch invariance (a reply never depends on what shares its step).
``FIDELITY`` holds what ``python -m bench.fidelity`` measured for each form; the runs,
and why the int8 forms miss the bar, are in docs/performance.md, "Fidelity". The
chosen form and the reason are logged at start-up and shown on the status page.

bf16 keeps the answers within the bar (docs/performance.md, "Fidelity") and reads half
the bytes of fp32 in every decode step, so ``auto`` serves it where it runs.

int4 keeps the answers (the same weights as fp32) and reads about 6 bits a weight where
fp32 reads 32 and bf16 16, so ``auto`` tries it before those; but only with Parley's
kernels: torch's int4 kernel is a scalar loop on CPUs without AVX-512, and a decode
step on it is 2.3x (1 row) to 8x (16 rows) slower than fp32's (docs/performance.md,
"Fidelity"), so that one is served only when asked for.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from . import blocks, int4, invariance, kernels, smoothing

logger = logging.getLogger(__name__)

WEIGHT_MODES = ("auto", "fp32", "bf16", "int4", "int8-head", "int8")
FASTEST_FIRST = ("int8", "int8-head", "int4", "bf16", "fp32")
MAX_MEAN_KL = 0.006
MIN_TOP1 = 0.97


@dataclass(frozen=True)
class Fidelity:
    """One form against fp32 on the bundled model (``bench.fidelity``)."""

    top1: float
    mean_kl: float
    batch_invariant: bool

    def meets_bar(self) -> bool:
        return self.mean_kl <= MAX_MEAN_KL and self.top1 >= MIN_TOP1 and self.batch_invariant

    def describe(self) -> str:
        invariant = "batch-invariant" if self.batch_invariant else "not batch-invariant"
        return f"top-1 {self.top1:.1%}, mean KL {self.mean_kl:.4f}, {invariant}"


FIDELITY = {  # bench.fidelity --quick, 2026-11-30, 2-core AVX2 EPYC (docs/performance.md)
    "fp32": Fidelity(top1=1.0, mean_kl=0.0, batch_invariant=True),
    "int8-head": Fidelity(top1=0.912, mean_kl=0.020, batch_invariant=False),
    "int8": Fidelity(top1=0.855, mean_kl=0.112, batch_invariant=False),
    # bench.fidelity (66 chats x 32 tokens), 2026-12-01, 2-core AVX2 EPYC, on Parley's
    # kernels: every greedy reply of 32 tokens identical to fp32's, facts 33/48 as fp32.
    "int4": Fidelity(top1=1.0, mean_kl=0.0, batch_invariant=True),
    # bench.fidelity (66 chats x 32 tokens), 2026-12-01, 2-core EPYC with AVX512-BF16
    "bf16": Fidelity(top1=0.990, mean_kl=0.00023, batch_invariant=True),
}


def int8_supported() -> bool:
    engines = torch.backends.quantized.supported_engines
    return any(engine in engines for engine in ("x86", "fbgemm"))


def cannot_run(form: str, model: Any) -> str | None:
    """Why this machine cannot serve ``form``, or None if it can."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    if form.startswith("int8") and not (on_cpu and int8_supported()):
        return "int8 weights need a CPU with the x86/fbgemm quantized engine"
    if form == "bf16":
        if on_cpu and not (invariance.onednn_available() and invariance.native_bf16()):
            return "bf16 weights need a CPU that multiplies bf16 natively (AVX512-BF16 or AMX) and oneDNN"
        if not on_cpu and not torch.cuda.is_bf16_supported():
            return "bf16 weights need a GPU with bf16 support"
    if form == "int4" and not on_cpu:
        return "int4 weights run on the CPU only"
    if form == "int4" and not (kernels.available() or int4.kernel_available()):
        return f"int4 weights need Parley's AVX2 kernels ({kernels.unavailable_reason()}) or torch's CPU int4 kernels"
    return None


def too_slow(form: str) -> str | None:
    """Why ``auto`` passes over a form that runs here but slower than fp32, or None."""
    if form == "int4" and not kernels.available():
        return f"only torch's scalar int4 kernel runs here, slower than fp32 (Parley's AVX2 kernels: {kernels.unavailable_reason()})"
    return None


def choose_weights(mode: str, model: Any) -> tuple[str, str]:
    """The form to serve for ``mode`` and why, in a sentence for the log and status page."""
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {mode!r}.")
    if mode != "auto":
        problem = cannot_run(mode, model)
        if problem:
            raise ValueError(f"INFERENCE_WEIGHTS={mode} cannot run here: {problem}.")
        return mode, f"{mode}, as INFERENCE_WEIGHTS asks ({FIDELITY[mode].describe()})"
    passed_over = []
    for form in FASTEST_FIRST:
        fidelity = FIDELITY[form]
        if not fidelity.meets_bar():
            passed_over.append(f"{form} changes the answers ({fidelity.describe()})")
        elif problem := cannot_run(form, model):
            passed_over.append(f"{form} cannot run here ({problem})")
        elif slow := too_slow(form):
            passed_over.append(f"{form} is not worth it here ({slow})")
        else:
            because = "; ".join(passed_over) if passed_over else "the fastest form that keeps the answers"
            return form, f"auto chose {form}: {because}"
    raise AssertionError("fp32 always meets the bar and always runs")


def _linear_names(model: Any, mode: str) -> set[str]:
    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (mode == "int8" or module is head):
            names.add(name)
    return names


def prepare_weights(
    model: Any, chosen: str, tokenizer: Any = None, max_rows: int = int4.KERNEL_ROWS
) -> tuple[Any, smoothing.Smoothing | None]:
    """Serve ``model`` in ``chosen`` (a form ``choose_weights`` returned); returns
    ``(model, smoothing)``. int8 and int4 forms replace linear layers in place; int4's
    kernel takes every step of up to ``max_rows`` rows (the engine's batch size), so a
    decode step's rows never depend on how many share it.

    With ``"int8"``, a model that ``smoothing.supports`` is smoothed first, calibrated
    on a few built-in chats encoded with ``tokenizer``.
    """
    applied = None
    if chosen == "int4":
        conversion = blocks.convert(model) if kernels.available() else int4.convert(model, max_rows)
        logger.info("int4 weights: %s", conversion.describe())
        return model, None
    if chosen == "int8" and tokenizer is not None and smoothing.supports(model):
        applied = smoothing.smooth(model, smoothing.calibration_ids(tokenizer))
    if chosen.startswith("int8"):
        # Per-output-channel weight scales: closer to fp32 than one scale per matrix.
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        spec = {name: qconfig for name in _linear_names(model, chosen)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    return model, applied
