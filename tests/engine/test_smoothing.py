"""Activation smoothing before int8: exact in fp32, adapters rescaled to match."""

from __future__ import annotations

from pathlib import Path

import torch

from inference.engine.loading import load_model
from inference.engine.lora import LoraAdapters
from inference.engine.smoothing import calibration_ids, smooth, supports

from .test_adapters import adapter_dirs  # noqa: F401  (the module-scoped fixture)

PROMPT_TEXT = "Smoothing must not change what the model says."


def logits_of(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def test_smoothing_changes_the_weights_but_not_the_fp32_logits(tiny_model_dir: Path):
    loaded = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)
    ids = list(loaded.tokenizer.encode(PROMPT_TEXT))
    before = logits_of(loaded.model, ids)
    q_before = loaded.model.model.layers[0].self_attn.q_proj.weight.clone()
    embeddings_before = loaded.model.get_input_embeddings().weight.clone()
    assert supports(loaded.model)

    applied = smooth(loaded.model, calibration_ids(loaded.tokenizer))

    assert not torch.equal(loaded.model.model.layers[0].self_attn.q_proj.weight, q_before)
    # The tied head was untied first: the input embeddings are untouched.
    assert torch.equal(loaded.model.get_input_embeddings().weight, embeddings_before)
    torch.testing.assert_close(logits_of(loaded.model, ids), before, rtol=1e-4, atol=1e-4)
    # Every linear layer has its input scale recorded; v and up also their output scale.
    layer = "model.layers.1."
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert f"{layer}self_attn.{name}" in applied.input_scales
    for name in ("gate_proj", "up_proj", "down_proj"):
        assert f"{layer}mlp.{name}" in applied.input_scales
    assert set(applied.output_scales) == {
        f"model.layers.{i}.{name}" for i in range(2) for name in ("self_attn.v_proj", "mlp.up_proj")
    }


def test_an_adapter_on_the_smoothed_model_gives_the_original_adapters_logits(
    tiny_model_dir: Path,
    adapter_dirs: dict[str, Path],  # noqa: F811
):
    from peft import PeftModel

    reference_base = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)
    ids = list(reference_base.tokenizer.encode(PROMPT_TEXT))
    reference = PeftModel.from_pretrained(reference_base.model, adapter_dirs["b"]).eval()
    expected = logits_of(reference, ids)

    served = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)
    applied = smooth(served.model, calibration_ids(served.tokenizer))
    adapters = LoraAdapters(served.model, applied)
    adapters.install(adapters.load("b", adapter_dirs["b"]))
    with adapters.batch(["b"]):
        got = logits_of(served.model, ids)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # Without the rescaling the adapter would be applied to the wrong inputs.
    unscaled = LoraAdapters(served.model)
    unscaled.install(unscaled.load("b2", adapter_dirs["b"]))
    with unscaled.batch(["b2"]):
        wrong = logits_of(served.model, ids)
    assert not torch.allclose(wrong, expected, rtol=1e-4, atol=1e-4)
