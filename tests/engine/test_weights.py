"""Weight forms: the choice ``auto`` makes, and how far int8 drifts from fp32."""

from __future__ import annotations

import pytest

from inference.engine.loading import load_model
from inference.engine.scheduler import Engine, generate_text
from inference.engine.types import GenerationRequest, SamplingParams
from inference.engine.weights import int8_supported, resolve_weights

from .conftest import BUNDLED_CACHE

QUESTIONS = [
    "What is the capital of France?",
    "Summarize the plot of Romeo and Juliet.",
    "What is 17 times 23?",
    "Write a haiku about the sea.",
    "Explain what a database index is in two sentences.",
    "Give me three tips for writing clear emails.",
    "How do I reverse a list in Python?",
    "What causes rain?",
]


def test_auto_picks_smoothed_int8_where_the_cpu_has_a_quantized_engine(tiny_model_dir):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    # The tiny model is Llama-shaped, so int8 with smoothing is what auto serves.
    assert resolve_weights("auto", model) == ("int8" if int8_supported() else "fp32")
    with pytest.raises(ValueError, match="weights must be one of"):
        resolve_weights("bf16", model)


def test_int8_modes_serve_requests(make_engine):
    for mode in ("int8", "int8-head"):
        engine = make_engine(weights=mode)
        assert engine.weights == mode
        _, finish = generate_text(engine, GenerationRequest(mode, [40, 41, 42], SamplingParams(max_new_tokens=5, ignore_eos=True)))
        assert finish.finish_reason == "length"


@pytest.mark.slow
def test_auto_weights_stay_close_to_fp32_greedy_output_on_the_bundled_model():
    """Teacher-forced through the engine's own prefill and batched decode, auto's
    greedy choice matches fp32's on at least 85 % of positions (measured 2026-11:
    smoothed int8 0.90, int8-head 0.92, int8 without smoothing 0.73)."""
    reference = Engine(load_model("bundled", cache_dir=BUNDLED_CACHE), weights="fp32")
    reference.start()
    prompts, continuations = [], []
    try:
        for index, question in enumerate(QUESTIONS):
            encoded = reference.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
            )
            prompt = list(encoded["input_ids"]) if hasattr(encoded, "keys") else list(encoded)
            params = SamplingParams(max_new_tokens=48, temperature=0, ignore_eos=True)
            _, finish = generate_text(reference, GenerationRequest(f"q{index}", prompt, params))
            prompts.append(prompt)
            continuations.append(list(finish.completion_ids))
    finally:
        reference.shutdown()
    candidate = Engine(load_model("bundled", cache_dir=BUNDLED_CACHE), weights="auto")
    if candidate.weights == "fp32":
        pytest.skip("auto chose fp32 on this machine")
    choices = candidate.greedy_choices(prompts, continuations)
    same = sum(a == b for got, want in zip(choices, continuations, strict=True) for a, b in zip(got, want))
    total = sum(len(got) for got in choices)
    agreement = same / total
    assert total == len(QUESTIONS) * 48
    assert agreement >= 0.85, f"{candidate.weights} agrees with fp32 on only {agreement:.0%} of next tokens"
