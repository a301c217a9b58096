"""What a fine-tuning job trains on: the base weights, an adapter to continue, a tokenizer.

A job may start from a base model or from a previous fine-tuned model; either way the
result runs on the same shared base weights. Tokenizers are loaded alone (not the
weights) and cached, so validating an upload in a web request stays quick.
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
    root_id: str  # the registry id of the base whose weights are used
    base_source: str  # what the engine loads
    init_adapter: str | None  # the LoRA adapter to continue from, if any


def training_base(model_id: str) -> TrainingBase | None:
    """The weights behind ``model_id``, or None if no such model is available."""
    spec = registry.model_get(model_id)
    if spec is None:
        return None
    root = spec.id
    if spec.id.startswith("ft:"):
        from inference.models import FineTunedModel

        root = FineTunedModel.objects.filter(public_id=spec.id).values_list("base_model", flat=True).first() or root
    return TrainingBase(spec.id, root, spec.base_source, spec.adapter_path)


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
