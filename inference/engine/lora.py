"""LoRA adapters served from one shared copy of the base weights, mixed in one batch.

Adapters are ordinary peft LoRA folders (``save_pretrained`` output); peft reads their
config and weights. They are applied with forward hooks on the targeted linear
layers rather than peft's layer injection, because peft cannot wrap the int8
dynamically quantized linears the engine serves with (it only wraps ``nn.Linear``
and its own quantized types). The math is peft's LoRA forward:
``base(x) + lora_B(lora_A(x)) * scaling`` with ``scaling = alpha / r`` (or
``alpha / sqrt(r)`` with rsLoRA). In a batch whose rows use different adapters the
base matmul runs once for every row and each adapter's low-rank update is added to
its own rows only (what multi-LoRA servers do); base-model rows get no update.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .smoothing import Smoothing

_PREFIX = "base_model.model."
_WEIGHT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


def low_rank_update(x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``lora_b(lora_a(x)) * scaling``. In a decode step (one token per row) each row is
    its own batch entry of a batched product, so a row's update does not depend on how
    many rows share the step (one matrix product over all rows picks its kernel by
    their count, and kernels round differently)."""
    if x.dim() == 3 and x.shape[1] == 1:
        rows = x.shape[0]
        low = torch.bmm(x, lora_a.T.expand(rows, -1, -1))
        return torch.bmm(low, lora_b.T.expand(rows, -1, -1)) * scaling
    return (x @ lora_a.T) @ lora_b.T * scaling


class AdapterError(ValueError):
    """An adapter folder the engine cannot serve; the message says why."""


@dataclass
class LoadedAdapter:
    name: str
    # module name -> (A [r, in], B [out, r], scaling)
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for pattern, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return value
    return default


class LoraAdapters:
    """The adapters registered with one model and the hooks that apply them."""

    def __init__(self, model: Any, smoothing: Smoothing | None = None) -> None:
        self.model = model
        self.smoothing = smoothing
        self._adapters: dict[str, LoadedAdapter] = {}
        self._table: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]] = {}
        self._hooks: dict[str, Any] = {}
        self._groups: list[tuple[str, torch.Tensor | None]] | None = None

    def names(self) -> set[str]:
        return set(self._adapters)

    def load(self, name: str, path: Path) -> LoadedAdapter:
        """Read and check an adapter folder (no model state changes)."""
        from peft import LoraConfig
        from peft.utils import load_peft_weights

        if not name:
            raise AdapterError("An adapter needs a name.")
        if not (path / "adapter_config.json").exists():
            raise AdapterError(f"{path} is not a peft adapter folder (no adapter_config.json).")
        try:
            config = LoraConfig.from_pretrained(str(path))
        except (TypeError, ValueError) as exc:
            raise AdapterError(f"{path} is not a LoRA adapter: {exc}") from exc
        if getattr(config, "use_dora", False) or getattr(config, "lora_bias", False):
            raise AdapterError("DoRA and LoRA biases are not supported by the engine.")
        state = load_peft_weights(str(path), device="cpu")
        return LoadedAdapter(name, self._collect(config, state, path))

    def _collect(
        self, config: Any, state: dict[str, torch.Tensor], path: Path
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            match = _WEIGHT_KEY.match(key)
            if match is None:
                raise AdapterError(f"{path} holds {key!r}; only LoRA linear weights are supported.")
            module = match["module"].removeprefix(_PREFIX)
            parts.setdefault(module, {})[match["part"]] = tensor.float()
        known = dict(self.model.named_modules())
        modules = {}
        for module, pair in parts.items():
            target = known.get(module)
            if target is None or "A" not in pair or "B" not in pair:
                raise AdapterError(f"{path} adapts {module!r}, which this model does not have.")
            lora_a, lora_b = pair["A"], pair["B"]
            if lora_a.shape[1] != target.in_features or lora_b.shape[0] != target.out_features:
                raise AdapterError(f"{path} does not fit {module!r} of this model (wrong shapes).")
            rank = lora_a.shape[0]
            alpha = _pattern_value(config.alpha_pattern, module, config.lora_alpha)
            scaling = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
            if self.smoothing is not None:
                # The served weights were rescaled (smoothing.py); rescale the adapter alike.
                lora_a, lora_b = self.smoothing.adapt_lora(module, lora_a, lora_b)
            modules[module] = (lora_a.contiguous(), lora_b.contiguous(), float(scaling))
        if not modules:
            raise AdapterError(f"{path} holds no LoRA weights.")
        return modules

    def install(self, adapter: LoadedAdapter) -> None:
        if adapter.name in self._adapters:
            self.remove(adapter.name)
        known = dict(self.model.named_modules())
        device = next(self.model.parameters()).device
        for module, (lora_a, lora_b, scaling) in adapter.modules.items():
            self._table.setdefault(module, {})[adapter.name] = (lora_a.to(device), lora_b.to(device), scaling)
            if module not in self._hooks:
                self._hooks[module] = known[module].register_forward_hook(self._hook_for(module))
        self._adapters[adapter.name] = adapter

    def remove(self, name: str) -> None:
        if self._adapters.pop(name, None) is None:
            raise AdapterError(f"There is no adapter named {name!r}.")
        for module in list(self._table):
            self._table[module].pop(name, None)
            if not self._table[module]:
                del self._table[module]
                self._hooks.pop(module).remove()

    def _hook_for(self, module: str) -> Any:
        def apply_lora(_layer: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
            groups = self._groups
            if not groups:
                return output
            weights = self._table.get(module, {})
            x = args[0]
            for name, rows in groups:
                entry = weights.get(name)
                if entry is None:
                    continue
                lora_a, lora_b, scaling = entry
                if rows is None:
                    output = output + low_rank_update(x, lora_a, lora_b, scaling)
                else:
                    output = output.index_add(0, rows, low_rank_update(x[rows], lora_a, lora_b, scaling))
            return output

        return apply_lora

    @contextmanager
    def batch(self, adapters: list[str | None]) -> Iterator[None]:
        """Within the block, row ``i`` of every forward uses ``adapters[i]``."""
        if not self._adapters or all(name is None for name in adapters):
            yield
            return
        if len(set(adapters)) == 1:
            groups: list[tuple[str, torch.Tensor | None]] = [(adapters[0], None)]  # type: ignore[list-item]
        else:
            rows: dict[str, list[int]] = {}
            for row, name in enumerate(adapters):
                if name is not None:
                    rows.setdefault(name, []).append(row)
            device = next(self.model.parameters()).device
            groups = [(name, torch.tensor(indices, device=device)) for name, indices in rows.items()]
        self._groups = groups
        try:
            yield
        finally:
            self._groups = None
