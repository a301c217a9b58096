"""int4 weights on torch's int4 kernel (served where Parley's AVX2 kernels cannot run;
tests/engine/test_blocks.py tests those): the GGUF's 4-bit groups come back exactly, the
packed layer stays close to fp32, and a reply never depends on what shares its decode
step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from inference.engine import int4
from inference.engine.loading import load_model
from inference.engine.scheduler import Engine, generate_text
from inference.engine.types import GenerationRequest, SamplingParams
from inference.engine.weights import FASTEST_FIRST, choose_weights

from .conftest import submit

pytestmark = pytest.mark.skipif(not int4.kernel_available(), reason="torch has no CPU int4 kernel here")


def q4_1_weight(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """A weight as the GGUF reader dequantizes Q4_1: groups of 32, ``q * d + m`` with
    ``d`` and ``m`` in fp16."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, columns), generator=generator, dtype=torch.int32)
    q[:, ::int4.GROUP] = 0  # each group holds its minimum and its maximum, as Q4_1's do
    q[:, 1 :: int4.GROUP] = 15
    d = (torch.rand(rows, columns // int4.GROUP, generator=generator) * 0.02).half().float()
    m = (-torch.rand(rows, columns // int4.GROUP, generator=generator) * 0.1).half().float()
    return int4.rebuild(q, d, m)


def quantize_like_the_gguf(model: Any) -> None:
    """Turn the tiny random model's linear layers (not the tied head) into Q4_1 weights."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                module.weight.copy_(int4.rebuild(*int4.q4_1_groups(module.weight)))


@pytest.fixture
def without_block_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inference.engine.kernels.available", lambda: False)
    monkeypatch.setattr("inference.engine.kernels.unavailable_reason", lambda: "switched off by the test")


@pytest.fixture
def int4_engine(tiny_model_dir: Path, without_block_kernels: None) -> Iterator[Engine]:
    loaded = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)
    quantize_like_the_gguf(loaded.model)
    engine = Engine(loaded, weights="int4")
    engine.start()
    yield engine
    engine.shutdown()


def test_q4_1_groups_come_back_bit_for_bit():
    weight = q4_1_weight(64, 128)
    q, d, m = int4.q4_1_groups(weight)
    assert int4.is_exact(weight, q, d, m)
    layer = int4.Int4Linear.from_groups(q, d, m)
    assert torch.equal(layer.unpack(), weight), "the kernel's (q - 8) * scale + zero is not the GGUF's q * d + m"
    noise = torch.randn(64, 128)
    assert not int4.is_exact(noise, *int4.q4_1_groups(noise)), "an fp32 weight is not 4-bit groups"


def test_the_packed_layer_matches_fp32_and_each_row_is_the_same_in_any_step():
    weight, bias = q4_1_weight(128, 160, seed=1), torch.randn(128)
    layer = int4.Int4Linear.from_groups(*int4.q4_1_groups(weight), bias)
    generator = torch.Generator().manual_seed(2)
    for rows in (1, 2, 16, 17):
        x = torch.randn(rows, 160, generator=generator)
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, weight, bias), atol=1e-4)
    x = torch.randn(16, 160, generator=generator)
    batch = layer(x)
    previous = torch.get_num_threads()
    try:
        for threads in {1, previous}:
            torch.set_num_threads(threads)
            assert all(torch.equal(layer(x[i : i + 1]), batch[i : i + 1]) for i in range(16))
            assert torch.equal(layer(x[3:11]), batch[3:11])
    finally:
        torch.set_num_threads(previous)
    assert layer(x.view(2, 8, 160)).shape == (2, 8, 128)


def test_an_engine_batch_over_16_rows_still_takes_the_kernel_for_every_decode_step(monkeypatch):
    """With INFERENCE_MAX_BATCH_SIZE=24, a decode step of 17-24 rows must not unpack to
    fp32 (that would make a row's bits depend on how many share its step)."""
    weight = q4_1_weight(64, 96, seed=3)
    layer = int4.Int4Linear.from_groups(*int4.q4_1_groups(weight), kernel_rows=24)
    unpacked = []
    unpack = layer.unpack
    monkeypatch.setattr(layer, "unpack", lambda: unpacked.append(1) or unpack())
    x = torch.randn(25, 96, generator=torch.Generator().manual_seed(4))
    batch = layer(x[:24])
    assert all(torch.equal(layer(x[i : i + 1]), batch[i : i + 1]) for i in range(24))
    assert torch.equal(layer(x[:20]), batch[:20])
    assert not unpacked, "a step of up to 24 rows went through fp32"
    layer(x)
    assert unpacked == [1], "25 rows (a prefill chunk) unpack"


def test_convert_packs_the_4bit_layers_and_keeps_the_tied_head(tiny_model_dir):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    quantize_like_the_gguf(model)
    embedding = model.get_input_embeddings().weight
    # Torch packs outputs in blocks of 64 where the CPU has AVX-512: the tiny model's
    # 32-wide k/v projections then stay fp32 (the bundled model's are 192 wide).
    linear = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    too_narrow = sorted(
        name for name, module in linear.items() if name != "lm_head" and module.out_features % int4.packing_block()
    )
    conversion = int4.convert(model)
    assert model.model.layers[0].mlp.down_proj.kernel_rows == int4.KERNEL_ROWS
    assert sorted(conversion.kept) == sorted(["lm_head", *too_narrow])  # 259 x 64; the bundled head is Q8_0
    assert len(conversion.packed) == 7 * model.config.num_hidden_layers - len(too_narrow)
    assert all(f"blocks of {int4.packing_block()}" in conversion.kept[name] for name in too_narrow)
    assert model.get_input_embeddings().weight is embedding is model.get_output_embeddings().weight
    described = conversion.describe()
    assert described.startswith(f"{len(conversion.packed)} linear layers int4; kept fp32: ") and "lm_head (" in described


def test_the_engine_gives_the_kernel_every_row_count_of_its_batch(tiny_model_dir, without_block_kernels):
    loaded = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)
    quantize_like_the_gguf(loaded.model)
    engine = Engine(loaded, weights="int4", max_batch_size=24)
    assert engine.model.model.layers[0].self_attn.q_proj.kernel_rows == 24


def test_an_int4_reply_is_the_same_alone_and_inside_a_batch(int4_engine):
    engine = int4_engine
    assert engine.weights == "int4"
    assert isinstance(engine.model.model.layers[0].mlp.down_proj, int4.Int4Linear)
    greedy = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    prompts = [[40 + i, 41 + i, 42 + i, 43] for i in range(10)]
    alone = [generate_text(engine, GenerationRequest(f"a{i}", p, greedy))[1].completion_ids for i, p in enumerate(prompts)]
    together = [submit(engine, GenerationRequest(f"t{i}", p, greedy)) for i, p in enumerate(prompts)]
    assert [c.wait(60).completion_ids for c in together] == alone


def test_int4_is_served_when_asked_and_refused_where_no_kernel_runs(tiny_model_dir, without_block_kernels, monkeypatch):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    form, why = choose_weights("int4", model)
    assert form == "int4" and "as INFERENCE_WEIGHTS asks" in why
    # On torch's kernel alone int4 is slower than fp32, so auto passes it over and says so.
    assert "int4" in FASTEST_FIRST
    form, why = choose_weights("auto", model)
    assert form != "int4" and "int4 is not worth it here (only torch's scalar int4 kernel runs here" in why
    monkeypatch.setattr("inference.engine.int4.kernel_available", lambda: False)
    with pytest.raises(ValueError, match="INFERENCE_WEIGHTS=int4 cannot run here: int4 weights need Parley's AVX2"):
        choose_weights("int4", model)
