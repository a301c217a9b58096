"""Parley's attention and RMSNorm kernels: what transformers computes, up to the order
of the sums, and the same bits for a row whatever shares its step."""

from __future__ import annotations

import pytest
import torch

from inference.engine import kernels
from inference.engine.loading import load_model

from .test_blocks import CAN_BUILD

pytestmark = pytest.mark.skipif(not CAN_BUILD, reason="no AVX2 + FMA CPU or no C++ compiler here")


def test_rms_norm_is_transformers_llama_rms_norm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(576, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(3, 5, 576, generator=torch.Generator().manual_seed(1)) * 4
    expected = norm(x)
    found = kernels.module().rms_norm(x, norm.weight.detach(), norm.variance_epsilon)
    assert found.shape == x.shape
    assert torch.allclose(found, expected, atol=1e-5, rtol=1e-5)
    rows = x.reshape(15, 576)
    together = kernels.module().rms_norm(rows, norm.weight.detach(), 1e-5)
    assert all(torch.equal(kernels.module().rms_norm(rows[i : i + 1], norm.weight.detach(), 1e-5)[0], together[i]) for i in range(15))


def test_install_norms_serves_every_llama_norm_and_keeps_the_logits(tiny_model_dir):
    model = load_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent).model
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.inference_mode():
        before = model(ids).logits
    count = kernels.install_norms(model)
    assert count == 2 * model.config.num_hidden_layers + 1
    with torch.inference_mode():
        after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-4)


def test_decode_attention_refuses_a_row_without_keys():
    query = torch.randn(2, 6, 64)
    key = torch.randn(2, 2, 16, 64)
    with pytest.raises(RuntimeError, match="row 1 has 0 keys"):
        kernels.module().decode_attention(query, key, key, torch.tensor([3, 0]), 0.125)
