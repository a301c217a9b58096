"""A reply never depends on what shares its decode step: the same bits alone or in a
batch of 16, greedy or seeded."""

from __future__ import annotations

import torch

from inference.engine.fidelity import teacher_forced_logprobs
from inference.engine.types import GenerationRequest, SamplingParams

from .conftest import submit

PROMPTS = [f"Request number {i}: {'tell me more ' * (i % 5)}" for i in range(16)]


def encoded(engine) -> list[list[int]]:
    return [list(engine.tokenizer.encode(p)) for p in PROMPTS]


def test_a_rows_logits_are_the_same_bits_alone_and_in_any_batch(make_engine):
    engine = make_engine()
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


def test_greedy_and_seeded_replies_are_the_same_alone_and_among_sixteen(make_engine):
    engine = make_engine()
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
        alone = teacher_forced_logprobs(engine, prompts[row : row + 1], continuations[row : row + 1], adapters[row : row + 1])
        assert torch.equal(alone[0], together[row]), f"row {row} ({adapters[row]}) changed with its neighbours"
