"""Activation smoothing, so every linear layer can run in int8 without losing the answer.

Dynamic int8 quantization gives each matmul input one scale for the whole batch. A
few hidden channels of a transformer carry activations 10-100x larger than the rest,
so that one scale leaves the other channels only a handful of int8 steps, and the
greedy answer drifts (by how much: docs/performance.md). The fix SmoothQuant described is exact in fp32: divide each input channel of a
linear layer by ``s_j`` and multiply the matching weight column by ``s_j``. The
division is folded into whatever produces that input (an RMSNorm's weight, or the rows
of the projection feeding it), so nothing runs at serving time; with
``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` the outliers move into the weights,
where per-output-channel weight scales absorb them.

For a Llama-shaped decoder layer the foldings are:

- q/k/v inputs: divided into ``input_layernorm.weight``;
- gate/up inputs: divided into ``post_attention_layernorm.weight``;
- down input (``silu(gate) * up``): divided into ``up_proj``'s output rows;
- o input (the attention output, a mix of ``v`` rows): divided into ``v_proj``'s output
  rows, one scale per key/value head channel, shared by the query heads of its group;
- the vocabulary head's input: divided into the final norm's weight (the head is
  untied from the input embeddings first).

``activation_ranges`` reads the per-channel maxima from a short fp32 pass over a few
built-in chats, once at load. The returned ``Smoothing``
records every weight's input and output scale, so LoRA adapters trained on the
original model are rescaled to the smoothed one when they are installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
# Chosen on the bundled model by greedy agreement with fp32 (0.5: 0.85, 0.6: 0.90,
# 0.7: 0.87, 0.8: 0.84 of teacher-forced next tokens; docs/performance.md).
DEFAULT_ALPHA = 0.6
_FLOOR = 1e-5

CALIBRATION_CHATS = [
    ("What is the capital of France?", "The capital of France is Paris, on the Seine."),
    (
        "How do I reverse a list in Python?",
        "Use `items[::-1]` for a reversed copy, or `items.reverse()` to reverse it in place.",
    ),
    ("Write a haiku about the sea.", "Grey waves fold and break / salt wind carries gull voices / the tide keeps its time"),
    (
        "Explain what a database index is in two sentences.",
        "An index is a sorted structure that lets the database find rows without scanning the "
        "whole table. It speeds up reads at the cost of extra storage and slower writes.",
    ),
    ("List five fruits and their colours.", "1. Banana: yellow\n2. Apple: red\n3. Kiwi: green\n4. Plum: purple\n5. Orange: orange"),
    ("Translate 'good morning' into Spanish and German.", "Spanish: buenos días. German: guten Morgen."),
    ("What is 17 times 23?", "17 x 23 = 391."),
]


@dataclass
class Smoothing:
    """What smoothing did to each linear layer: ``W' = W * in[None, :] / out[:, None]``."""

    alpha: float
    input_scales: dict[str, torch.Tensor] = field(default_factory=dict)
    output_scales: dict[str, torch.Tensor] = field(default_factory=dict)

    def adapt_lora(self, module: str, lora_a: torch.Tensor, lora_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescale an adapter trained on the original weights to the smoothed model."""
        scale_in = self.input_scales.get(module)
        scale_out = self.output_scales.get(module)
        if scale_in is not None:
            lora_a = lora_a * scale_in[None, :]
        if scale_out is not None:
            lora_b = lora_b / scale_out[:, None]
        return lora_a, lora_b


def supports(model: Any) -> bool:
    """Whether ``model`` has the Llama layer shape the foldings above assume."""
    config = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or not layers:
        return False
    layer = layers[0]
    return all(
        hasattr(layer, name) for name in ("input_layernorm", "post_attention_layernorm", "self_attn", "mlp")
    ) and hasattr(inner, "norm")


def calibration_ids(tokenizer: Any) -> list[list[int]]:
    """The built-in chats as token ids (plain text where the tokenizer has no chat template)."""
    sequences = []
    for question, answer in CALIBRATION_CHATS:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        try:
            encoded = tokenizer.apply_chat_template(messages, tokenize=True)
            ids = list(encoded["input_ids"]) if hasattr(encoded, "keys") else list(encoded)
        except (ValueError, AttributeError, TypeError):
            ids = list(tokenizer.encode(f"{question}\n{answer}"))
        if ids:
            sequences.append(ids)
    return sequences


@torch.no_grad()
def activation_ranges(model: Any, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
    """Per input channel, the largest ``|x|`` each linear layer sees on ``sequences``."""
    ranges: dict[str, torch.Tensor] = {}
    hooks = []

    def watch(name: str) -> Any:
        def hook(_module: Any, args: tuple, _output: Any) -> None:
            x = args[0].detach()
            peak = x.reshape(-1, x.shape[-1]).abs().amax(0).float()
            ranges[name] = torch.maximum(ranges[name], peak) if name in ranges else peak

        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(watch(name)))
    try:
        for ids in sequences:
            model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def _balance(activation: torch.Tensor, weight_peak: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-channel scale ``max|x|^alpha / max|W|^(1 - alpha)``."""
    scale = activation.clamp(min=_FLOOR) ** alpha / weight_peak.clamp(min=_FLOOR) ** (1 - alpha)
    return scale.clamp(min=_FLOOR)


def _scale(activation: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    weight_peak = torch.stack([w.detach().abs().amax(0).float() for w in weights]).amax(0)
    return _balance(activation, weight_peak, alpha)


@torch.no_grad()
def smooth(model: Any, sequences: list[list[int]], alpha: float = DEFAULT_ALPHA) -> Smoothing:
    """Fold smoothing scales into ``model`` in place (fp32-exact); return what was done."""
    if not supports(model):
        raise ValueError(f"Smoothing needs a {'/'.join(SUPPORTED_MODEL_TYPES)} decoder.")
    ranges = activation_ranges(model, sequences)
    names = {id(module): name for name, module in model.named_modules()}
    result = Smoothing(alpha)

    def scale_inputs(linears: list[Any], scale: torch.Tensor) -> None:
        for linear in linears:
            linear.weight.mul_(scale.to(linear.weight.dtype))
            result.input_scales[names[id(linear)]] = scale

    def scale_outputs(linear: Any, scale: torch.Tensor) -> None:
        linear.weight.div_(scale.to(linear.weight.dtype)[:, None])
        if linear.bias is not None:
            linear.bias.div_(scale.to(linear.bias.dtype))
        result.output_scales[names[id(linear)]] = scale

    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        qkv = [attention.q_proj, attention.k_proj, attention.v_proj]
        scale = _scale(ranges[names[id(attention.q_proj)]], [p.weight for p in qkv], alpha)
        layer.input_layernorm.weight.div_(scale.to(layer.input_layernorm.weight.dtype))
        scale_inputs(qkv, scale)

        gate_up = [mlp.gate_proj, mlp.up_proj]
        scale = _scale(ranges[names[id(mlp.gate_proj)]], [p.weight for p in gate_up], alpha)
        layer.post_attention_layernorm.weight.div_(scale.to(layer.post_attention_layernorm.weight.dtype))
        scale_inputs(gate_up, scale)

        scale = _scale(ranges[names[id(mlp.down_proj)]], [mlp.down_proj.weight], alpha)
        scale_outputs(mlp.up_proj, scale)
        scale_inputs([mlp.down_proj], scale)

        # o_proj's input channel (head h, dim d) is v's channel (kv head of h, d): one
        # scale per kv-head channel, the largest over the query heads sharing it.
        head_dim = attention.o_proj.weight.shape[1] // heads
        group = heads // kv_heads
        activation = ranges[names[id(attention.o_proj)]].view(kv_heads, group, head_dim).amax(1)
        weight_peak = attention.o_proj.weight.abs().amax(0).float().view(kv_heads, group, head_dim).amax(1)
        kv_scale = _balance(activation, weight_peak, alpha)
        scale_outputs(attention.v_proj, kv_scale.reshape(-1))
        scale_inputs([attention.o_proj], kv_scale[:, None, :].expand(kv_heads, group, head_dim).reshape(-1))

    head = model.get_output_embeddings()
    scale = _scale(ranges[names[id(head)]], [head.weight], alpha)
    # Untie the head from the input embeddings before changing it.
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    model.model.norm.weight.div_(scale.to(model.model.norm.weight.dtype))
    scale_inputs([head], scale)
    return result
