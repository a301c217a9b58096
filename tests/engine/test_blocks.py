"""int4 weights on Parley's AVX2 kernels: the GGUF's Q4_1 and Q8_0 blocks come back bit
for bit, the product matches fp32 up to the order of the sums, and a row's result is
the same bits alone, in any batch and on any number of threads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from inference.engine import blocks, int4, kernels
from inference.engine.loading import load_model
from inference.engine.scheduler import generate_text
from inference.engine.types import GenerationRequest, SamplingParams

from .conftest import submit
from .test_batch_invariance import encoded
from .test_int4 import q4_1_weight, quantize_like_the_gguf

# The kernels build wherever the CPU has AVX2 and FMA and a C++ compiler is installed
# (make test's machines do): there a build that fails is a failure, not a skip.
CAN_BUILD = {"avx2", "fma"} <= kernels.cpu_flags() and shutil.which("c++") is not None
pytestmark = pytest.mark.skipif(not CAN_BUILD, reason="no AVX2 + FMA CPU or no C++ compiler here")


def q8_0_weight(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """A weight as the GGUF reader dequantizes Q8_0: ``q * d``, ``d`` in fp16, and the
    largest code of each group 127 (ggml's quantizer makes it so)."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (rows, columns), generator=generator)
    q[:, :: blocks.GROUP] = 127
    d = (torch.rand(rows, columns // blocks.GROUP, generator=generator) * 0.01 + 1e-4).half().float()
    return blocks.q8_0_rebuild(q.to(torch.int8), d)


def test_the_kernels_build_and_pass_their_start_up_check():
    assert kernels.build() is None
    assert kernels.available()


def test_q4_1_and_q8_0_blocks_come_back_bit_for_bit():
    weight = q4_1_weight(24, 96)
    layer = blocks.BlockLinear.q4_1(*int4.q4_1_groups(weight))
    assert torch.equal(layer.unpack(), weight)
    head = q8_0_weight(30, 64, seed=1)
    q, d = blocks.q8_0_groups(head)
    assert blocks.q8_0_is_exact(head, q, d)
    assert torch.equal(blocks.BlockLinear.q8_0(q, d).unpack(), head)
    noise = torch.randn(30, 64)
    assert not blocks.q8_0_is_exact(noise, *blocks.q8_0_groups(noise)), "an fp32 weight is not Q8_0 blocks"


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
@pytest.mark.parametrize("outputs", [7, 96])  # whole tiles of three outputs, and two left over
def test_a_row_is_the_same_bits_alone_in_any_batch_and_on_any_threads(kind, outputs):
    if kind == "q4_1":
        weight = q4_1_weight(outputs, 160, seed=2)
        layer = blocks.BlockLinear.q4_1(*int4.q4_1_groups(weight), torch.randn(outputs))
    else:
        weight = q8_0_weight(outputs, 160, seed=3)
        layer = blocks.BlockLinear.q8_0(*blocks.q8_0_groups(weight), torch.randn(outputs))
    x = torch.randn(40, 160, generator=torch.Generator().manual_seed(4))
    expected = torch.nn.functional.linear(x.double(), weight.double(), layer.bias.double())
    full = layer(x)
    assert (full.double() - expected).abs().max() < 1e-5, "the product is not x times the GGUF's weights"
    previous = torch.get_num_threads()
    try:
        for threads in {1, 2, previous}:
            torch.set_num_threads(threads)
            for rows in (1, 2, 3, 4, 5, 11, 16, 17, 40):
                part = layer(x[:rows])
                assert torch.equal(part, full[:rows]), f"{rows} rows on {threads} threads"
            assert all(torch.equal(layer(x[i : i + 1]), full[i : i + 1]) for i in range(40))
    finally:
        torch.set_num_threads(previous)
    assert layer(x[:16].view(2, 8, 160)).shape == (2, 8, outputs)


def test_convert_holds_every_block_layer_joins_siblings_and_keeps_the_rest_fp32(tiny_model_dir):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    quantize_like_the_gguf(model)
    embedding = model.get_input_embeddings().weight
    ids = torch.tensor([[5, 9, 17, 33, 2, 8]])
    with torch.inference_mode():
        before = model(ids).logits
    conversion = blocks.convert(model)
    assert len(conversion.q4_1) == 7 * model.config.num_hidden_layers and not conversion.q8_0
    assert list(conversion.kept) == ["lm_head"] and "not Q4_1 or Q8_0" in conversion.kept["lm_head"]
    assert model.get_input_embeddings().weight is embedding is model.get_output_embeddings().weight
    with torch.inference_mode():
        after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-4)
    attention = model.model.layers[0].self_attn
    assert [type(attention.q_proj), type(attention.v_proj)] == [blocks.BlockPart, blocks.BlockPart]
    assert attention.q_proj.joined.out_features == sum(
        getattr(attention, name).out_features for name in ("q_proj", "k_proj", "v_proj")
    )
    assert conversion.describe().startswith(f"{len(conversion.q4_1)} linear layers Q4_1, 0 Q8_0")


def test_a_q8_0_head_is_held_in_blocks_and_leaves_the_tied_embedding_alone(tiny_model_dir):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.copy_(q8_0_weight(*head.weight.shape, seed=5))
    embedding = model.get_input_embeddings().weight.clone()
    conversion = blocks.convert(model)
    assert conversion.q8_0 == ["lm_head"]
    assert isinstance(model.get_output_embeddings(), blocks.BlockLinear)
    assert torch.equal(model.get_input_embeddings().weight, embedding)


def q4_1_copy(tiny_model_dir: Path) -> Path:
    """The tiny model with its decoder's weights made Q4_1, saved once next to it."""
    copy = tiny_model_dir.parent / "q4_1-tiny"
    if not copy.exists():
        loaded = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)
        quantize_like_the_gguf(loaded.model)
        loaded.model.save_pretrained(copy)
        loaded.tokenizer.save_pretrained(copy)
    return copy


def test_the_engine_serves_int4_on_the_kernels_and_a_reply_never_depends_on_its_neighbours(make_engine, tiny_model_dir):
    engine = make_engine(q4_1_copy(tiny_model_dir), weights="int4")
    assert engine.weights == "int4"
    assert isinstance(engine.model.model.layers[0].mlp.down_proj, blocks.BlockLinear)
    # q/k/v and gate/up are joined: four products a layer for seven projections.
    products = 4 * engine.model.config.num_hidden_layers
    assert engine.invariance.startswith(f"Parley's AVX2 block kernels ({products} Q4_1); other layers: "), engine.invariance
    assert isinstance(engine.model.model.layers[0].self_attn.k_proj, blocks.BlockPart)
    prompts = encoded(engine)
    for params in (SamplingParams(max_new_tokens=10, temperature=0), SamplingParams(max_new_tokens=10, seed=7)):
        alone = [
            generate_text(engine, GenerationRequest(f"a{i}", p, params))[1].completion_ids
            for i, p in enumerate(prompts[:6])
        ]
        together = [submit(engine, GenerationRequest(f"t{i}", p, params)) for i, p in enumerate(prompts)]
        assert [c.wait(60).completion_ids for c in together][:6] == alone


def test_an_adapter_applies_on_top_of_block_layers_and_its_rows_stay_invariant(make_engine, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from inference.engine.fidelity import teacher_forced_logprobs

    torch.manual_seed(6)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(tmp_path / "a")
    engine = make_engine(q4_1_copy(tiny_model_dir), weights="int4")
    engine.add_adapter("a", tmp_path / "a")
    prompts = encoded(engine)
    continuations = [[(5 * i + k) % 200 + 3 for k in range(8)] for i in range(len(prompts))]
    adapters = ["a" if i % 3 else None for i in range(len(prompts))]
    together = teacher_forced_logprobs(engine, prompts, continuations, adapters)
    base = teacher_forced_logprobs(engine, prompts[1:2], continuations[1:2], [None])
    assert not torch.equal(base[0], together[1]), "the adapter changed nothing"
    for row in (0, 1, 5):
        alone = teacher_forced_logprobs(engine, prompts[row : row + 1], continuations[row : row + 1], adapters[row : row + 1])
        assert torch.equal(alone[0], together[row]), f"row {row} ({adapters[row]}) changed with its neighbours"
