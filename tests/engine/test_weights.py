"""Weight forms: the choice ``auto`` makes, and that it keeps the model's answers."""

from __future__ import annotations

import pytest

from bench.fidelity import Reference
from bench.fidelity_set import CHATS
from bench.inference import chat_ids
from inference.engine import kernels
from inference.engine.fidelity import compare, teacher_forced_logprobs
from inference.engine.loading import load_model
from inference.engine.scheduler import Engine, generate_text
from inference.engine.types import GenerationRequest, SamplingParams
from inference.engine.weights import FIDELITY, MAX_MEAN_KL, MIN_TOP1, cannot_run, choose_weights, int8_supported

from .conftest import BUNDLED_CACHE, submit


def test_auto_serves_the_fastest_form_that_keeps_the_answers_and_says_why(tiny_model_dir, monkeypatch):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    form, why = choose_weights("auto", model)
    assert FIDELITY[form].meets_bar()
    expected = "int4" if kernels.available() else "bf16" if cannot_run("bf16", model) is None else "fp32"
    assert form == expected, "int4 where Parley's kernels run, else bf16 where this CPU multiplies bf16 natively, else fp32"
    assert why.startswith(f"auto chose {form}:") and "int8 changes the answers" in why and "KL" in why
    monkeypatch.setattr("inference.engine.kernels.available", lambda: False)
    monkeypatch.setattr("inference.engine.kernels.unavailable_reason", lambda: "the CPU lacks avx2")
    monkeypatch.setattr("inference.engine.invariance.native_bf16", lambda: False)
    form, why = choose_weights("auto", model)
    assert form == "fp32"
    assert "int4 is not worth it here (only torch's scalar int4 kernel runs here" in why or "int4 cannot run here" in why
    assert "the CPU lacks avx2" in why
    assert "bf16 cannot run here (bf16 weights need a CPU that multiplies bf16 natively" in why


def test_an_explicit_form_is_served_as_asked_or_refused_with_the_reason(tiny_model_dir, monkeypatch):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    with pytest.raises(ValueError, match="weights must be one of auto, fp32, bf16, int4, int8-head, int8, not 'fp16'"):
        choose_weights("fp16", model)
    monkeypatch.setattr("inference.engine.invariance.native_bf16", lambda: False)
    with pytest.raises(
        ValueError,
        match="INFERENCE_WEIGHTS=bf16 cannot run here: bf16 weights need a CPU that multiplies bf16 natively",
    ):
        choose_weights("bf16", model)
    if int8_supported():
        assert choose_weights("int8", model)[0] == "int8"
    monkeypatch.setattr("inference.engine.weights.int8_supported", lambda: False)
    with pytest.raises(ValueError, match="INFERENCE_WEIGHTS=int8 cannot run here: int8 weights need a CPU"):
        choose_weights("int8", model)


def test_int8_modes_serve_requests(make_engine):
    for mode in ("int8", "int8-head"):
        engine = make_engine(weights=mode)
        assert engine.weights == mode
        params = SamplingParams(max_new_tokens=5, ignore_eos=True)
        _, finish = generate_text(engine, GenerationRequest(mode, [40, 41, 42], params))
        assert finish.finish_reason == "length"


@pytest.mark.slow
def test_auto_weights_keep_the_bundled_models_answers():
    """Teacher-forced on fp32's greedy replies through the engine's prefill and its
    16-row batched decode: the bar of the default form (bench.fidelity runs it on
    every form and more chats), and the same greedy reply alone and among 16
    (tests/engine/test_batch_invariance.py checks every row on the tiny model)."""
    reference = Reference(tokens=24)
    chats = CHATS[::4][:16]
    prompts = [chat_ids(reference.tokenizer, chat) for chat in chats]
    replies = [reference.greedy(prompt, 24) for prompt in prompts]
    expected = [reference.logprobs(p, r) for p, r in zip(prompts, replies, strict=True)]
    engine = Engine(load_model("bundled", cache_dir=BUNDLED_CACHE), weights="auto")
    engine.start()
    try:
        agreement = compare(expected, teacher_forced_logprobs(engine, prompts, replies))
        greedy = SamplingParams(max_new_tokens=24, temperature=0)
        together = [submit(engine, GenerationRequest(f"t{i}", p, greedy)) for i, p in enumerate(prompts)]
        in_batch = [c.wait(300).completion_ids for c in together]
        # Six of the sixteen again, each alone (every one alone would double the test's time).
        for i in range(0, len(prompts), 3):
            alone = generate_text(engine, GenerationRequest(f"a{i}", prompts[i], greedy))[1].completion_ids
            assert alone == in_batch[i], f"chat {i}: its reply depends on what shares its step"
    finally:
        engine.shutdown()
    assert agreement.mean_kl <= MAX_MEAN_KL, f"{engine.weights}: mean KL {agreement.mean_kl:.4f}"
    assert agreement.top1 >= MIN_TOP1, f"{engine.weights}: top-1 {agreement.top1:.1%}"
