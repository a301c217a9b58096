"""Which models a user can pick, and where each one's weights come from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from inference.engine.loading import BUNDLED_DISPLAY_NAME, BUNDLED_MODEL

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
FINE_TUNED_PREFIX = "ft:"


@dataclass(frozen=True)
class ModelSpec:
    """A model as the chat and the API name it.

    ``base_source`` is what the engine loads (``"bundled"`` or a folder); a
    fine-tuned model adds ``adapter_path`` on top of its base's weights.
    """

    id: str
    label: str
    base_source: str
    adapter_path: str | None = None
    owned_by: str = "parley"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-") or "model"


def base_models() -> list[ModelSpec]:
    models = [ModelSpec(id=BUNDLED_MODEL_ID, label=BUNDLED_DISPLAY_NAME, base_source=BUNDLED_MODEL)]
    configured = settings.INFERENCE_MODEL
    if configured != BUNDLED_MODEL:
        name = Path(configured).name or configured
        models.insert(0, ModelSpec(id=_slug(name), label=name, base_source=configured))
    return models


def default_model_id() -> str:
    return base_models()[0].id


def available_models() -> list[ModelSpec]:
    """Base models, then every visible fine-tuned model whose base is available (one query)."""
    bases = base_models()
    return bases + fine_tuned_models(bases)


def fine_tuned_models(bases: list[ModelSpec]) -> list[ModelSpec]:
    from inference.models import FineTunedModel  # the registry is imported before apps are ready

    sources = {spec.id: spec.base_source for spec in bases}
    rows = FineTunedModel.objects.filter(hidden=False, base_model__in=sources).values_list(
        "public_id", "label", "base_model", "adapter_path", "method"
    )
    specs = []
    for model_id, label, base_id, path, method in rows:
        if method == "full":  # a whole model folder: it is its own base
            specs.append(ModelSpec(id=model_id, label=label, base_source=path))
        else:
            specs.append(ModelSpec(id=model_id, label=label, base_source=sources[base_id], adapter_path=path))
    return specs


def model_get(model_id: str) -> ModelSpec | None:
    """The model named ``model_id``; only fine-tuned ids ("ft:...") touch the database."""
    models = available_models() if model_id.startswith(FINE_TUNED_PREFIX) else base_models()
    return next((spec for spec in models if spec.id == model_id), None)


def model_choices() -> list[tuple[str, str]]:
    return [(spec.id, spec.label) for spec in available_models()]
