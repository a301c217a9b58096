"""What a fine-tuning job trains on: the base weights, an adapter to continue, a tokenizer.

A job may start from a base model or from a previous fine-tuned model. A LoRA job
trains an adapter on the weights its starting model runs on (a base's, or a full
fine-tuned model's) and the result is served on those same weights; it continues the
starting model's adapter, if it has one. A full job trains a copy of those weights,
with that adapter merged in first. Tokenizers are loaded alone (not the weights) and
cached, so validating an upload in a web request stays quick.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from inference import registry


@dataclass(frozen=True)
class TrainingBase:
    model_id: str  # what the job names: a base or a fine-tuned model
    root_id: str  # the base model its line of fine-tuning started from (names the result)
    weights_id: str  # the model whose weights are loaded: a base or a full fine-tuned model
    base_source: str  # what the engine loads: those weights
    init_adapter: str | None  # the starting model's LoRA adapter, if it has one

    def runs_on(self, method: str) -> str:
        """The registry id a result of ``method`` is served on: a LoRA adapter on the
        weights it was trained on; a full model is its own, filed under its root."""
        return self.weights_id if method == "lora" else self.root_id


def training_base(model_id: str) -> TrainingBase | None:
    """The weights behind ``model_id``, or None if no such model is available."""
    spec = registry.model_get(model_id)
    if spec is None:
        return None
    return TrainingBase(
        model_id=spec.id,
        root_id=spec.root_id or spec.id,
        weights_id=spec.weights_id or spec.id,
        base_source=spec.base_source,
        init_adapter=spec.adapter_path,
    )


@functools.lru_cache(maxsize=4)
def _tokenizer(base_source: str, cache_dir: str) -> tuple[Any, int]:
    from pathlib import Path

    from transformers import AutoConfig, AutoTokenizer

    from inference.engine.loading import resolve_source

    resolved = resolve_source(base_source, Path(cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    config = AutoConfig.from_pretrained(resolved)
    return tokenizer, int(getattr(config, "max_position_embeddings", 2048) or 2048)


def tokenizer_for(base_source: str) -> tuple[Any, int]:
    """The tokenizer and context length of ``base_source`` (loaded once per process)."""
    return _tokenizer(base_source, str(settings.INFERENCE_CACHE_DIR))
