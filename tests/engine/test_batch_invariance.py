"""A reply never depends on what shares its decode step: the same bits alone or in a
batch of 16, greedy or seeded."""

from __future__ import annotations

import pytest
import torch

from inference.engine import kernels
from inference.engine.fidelity import teacher_forced_logprobs
from inference.engine.loading import load_model
from inference.engine.types import GenerationRequest, SamplingParams
from inference.engine.weights import cannot_run

from .conftest import submit

PROMPTS = [f"Request number {i}: {'tell me more ' * (i % 5)}" for i in range(16)]


def encoded(engine) -> list[list[int]]:
    return [list(engine.tokenizer.encode(p)) for p in PROMPTS]


def bf16_or_skip(tiny_model_dir) -> None:
    problem = cannot_run("bf16", load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model)
    if problem:
        pytest.skip(problem)


ATTENTION_TEXT = {
    "kernel": "Parley's decode attention kernel",
    "spans": "attention over whole-tile spans",
    "per row": "per-row attention",
}


def use_attention(monkeypatch, attention: str) -> None:
    """Make the engine pick ``attention``: Parley's kernel where it runs (the default),
    else spans, else per row."""
    if attention == "kernel":
        if not kernels.available():
            pytest.skip(f"Parley's kernels are unavailable: {kernels.unavailable_reason()}")
        return
    monkeypatch.setattr("inference.engine.kernels.available", lambda: False)
    if attention == "per row":
        monkeypatch.setattr("inference.engine.invariance.spans_are_invariant", lambda *args: False)


@pytest.mark.parametrize(
    ("weights", "attention", "parallel_rows"),
    [
        ("fp32", "kernel", None),
        ("fp32", "kernel", 1),
        ("fp32", "spans", None),
        ("fp32", "per row", None),
        ("fp32", "spans", 1),
        ("fp32", "spans", 8),
        ("bf16", "spans", None),
        ("bf16", "per row", 8),
    ],
)
def test_a_rows_logits_are_the_same_bits_alone_and_in_any_batch(
    make_engine, tiny_model_dir, monkeypatch, weights, attention, parallel_rows
):
    if weights == "bf16":
        bf16_or_skip(tiny_model_dir)
    use_attention(monkeypatch, attention)
    engine = make_engine(weights=weights, parallel_rows=parallel_rows)
    assert ATTENTION_TEXT[attention] in engine.invariance, engine.invariance
    assert engine.invariance.startswith(f"oneDNN {weights}") or weights == "fp32"
    prompts = encoded(engine)
    continuations = [[(7 * i + k) % 200 + 3 for k in range(12)] for i in range(len(prompts))]
    together = teacher_forced_logprobs(engine, prompts, continuations)
    for size in (1, 2, 3, 5, 9, 11):
        part = teacher_forced_logprobs(engine, prompts[:size], continuations[:size])
        for row in range(size):
            assert torch.equal(part[row], together[row]), f"row {row} of a {size}-row step differs from a 16-row step"


def replies(engine, prompts, params, *, together: bool) -> list[tuple[int, ...]]:
    if together:
        collectors = [submit(engine, GenerationRequest(f"t{i}", p, params)) for i, p in enumerate(prompts)]
        return [c.wait().completion_ids for c in collectors]
    return [submit(engine, GenerationRequest(f"a{i}", p, params)).wait().completion_ids for i, p in enumerate(prompts)]


@pytest.mark.parametrize("weights", ["fp32", "bf16"])
def test_greedy_and_seeded_replies_are_the_same_alone_and_among_sixteen(make_engine, tiny_model_dir, weights):
    if weights == "bf16":
        bf16_or_skip(tiny_model_dir)
    engine = make_engine(weights=weights)
    prompts = encoded(engine)
    for params in (
        SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True),
        SamplingParams(max_new_tokens=24, temperature=0.9, seed=7, ignore_eos=True),
    ):
        assert replies(engine, prompts, params, together=False) == replies(engine, prompts, params, together=True)


def test_without_onednn_small_steps_are_padded_to_row_counts_computed_like_a_full_step(make_engine, monkeypatch):
    monkeypatch.setattr("inference.engine.invariance.onednn_available", lambda: False)
    engine = make_engine()
    plan = engine.row_padding
    assert plan is not None, "this CPU's default kernels offered batch-invariant row counts"
    assert sorted(plan) == list(range(1, engine.max_batch_size + 1))
    assert all(target >= rows for rows, target in plan.items())
    prompts = encoded(engine)
    continuations = [[(3 * i + k) % 200 + 3 for k in range(8)] for i in range(len(prompts))]
    together = teacher_forced_logprobs(engine, prompts, continuations)
    for size in (1, 3, 9):
        part = teacher_forced_logprobs(engine, prompts[:size], continuations[:size])
        assert all(torch.equal(part[row], together[row]) for row in range(size))


def test_the_engine_says_how_it_keeps_batches_invariant(make_engine):
    assert make_engine().stats()["batch_invariance"] != "none found"


def test_adapter_rows_are_the_same_bits_alone_and_among_other_adapters(make_engine, tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(tmp_path / "a")
    engine = make_engine()
    engine.add_adapter("a", tmp_path / "a")
    prompts = encoded(engine)
    continuations = [[(5 * i + k) % 200 + 3 for k in range(10)] for i in range(len(prompts))]
    adapters = ["a" if i % 3 else None for i in range(len(prompts))]
    together = teacher_forced_logprobs(engine, prompts, continuations, adapters)
    for row in (0, 1, 2, 7):
        alone = teacher_forced_logprobs(
            engine, prompts[row : row + 1], continuations[row : row + 1], adapters[row : row + 1]
        )
        assert torch.equal(alone[0], together[row]), f"row {row} ({adapters[row]}) changed with its neighbours"


@pytest.mark.parametrize("attention", ["kernel", "spans"])
def test_each_attention_computes_what_each_row_over_its_own_keys_does(make_engine, monkeypatch, attention):
    """The span form reads masked keys past each row's end, the kernel its own exp and
    sums; each must still give each row its own attention (equal up to the order of
    the sums) as SDPA does over the row's keys alone."""
    with monkeypatch.context() as patch:
        use_attention(patch, attention)
        fast = make_engine()
    assert ATTENTION_TEXT[attention] in fast.invariance
    prompts = encoded(fast)
    continuations = [[(11 * i + k) % 200 + 3 for k in range(10)] for i in range(len(prompts))]
    batched = teacher_forced_logprobs(fast, prompts, continuations)
    use_attention(monkeypatch, "per row")
    per_row = make_engine()
    assert "per-row attention" in per_row.invariance
    separate = teacher_forced_logprobs(per_row, prompts, continuations)
    for row in range(len(prompts)):
        assert torch.allclose(batched[row], separate[row], atol=1e-4, rtol=0), f"row {row}"
