"""Which models a user can pick, and where each one's weights come from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from inference.engine.loading import BUNDLED_DISPLAY_NAME, BUNDLED_MODEL

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
FINE_TUNED_PREFIX = "ft:"


@dataclass(frozen=True)
class ModelSpec:
    """A model as the chat and the API name it.

    ``base_source`` is what the engine loads (``"bundled"`` or a folder); a LoRA
    fine-tuned model adds ``adapter_path`` on top of those weights. ``weights_id``
    names the model whose weights ``base_source`` holds (a base, or a full fine-tuned
    model), ``root_id`` the base model its line of fine-tuning started from; None for
    either means the model itself.
    """

    id: str
    label: str
    base_source: str
    adapter_path: str | None = None
    owned_by: str = "parley"
    weights_id: str | None = None
    root_id: str | None = None


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
    """Visible fine-tuned models, each on the weights it was trained on.

    A full model is a whole model folder of its own. A LoRA model runs on its
    ``base_model``'s weights: a base, or a full fine-tuned model (hidden or not: hiding
    it only takes it out of the picker) whose own base is available.
    """
    from inference.models import FineTunedModel  # the registry is imported before apps are ready

    sources = {spec.id: spec.base_source for spec in bases}
    rows = list(
        FineTunedModel.objects.filter(
            Q(base_model__in=sources) | Q(base_model__startswith=FINE_TUNED_PREFIX)
        ).values_list("public_id", "label", "base_model", "adapter_path", "method", "hidden")
    )
    wholes = {row[0]: (row[3], row[2]) for row in rows if row[4] == "full" and row[2] in sources}
    specs = []
    for model_id, label, base_id, path, method, hidden in rows:
        if hidden:
            continue
        if model_id in wholes:
            specs.append(ModelSpec(id=model_id, label=label, base_source=path, root_id=base_id))
        elif method == "lora" and base_id in sources:
            specs.append(_lora_spec(model_id, label, path, sources[base_id], base_id, base_id))
        elif method == "lora" and base_id in wholes:
            whole_path, root_id = wholes[base_id]
            specs.append(_lora_spec(model_id, label, path, whole_path, base_id, root_id))
    return specs


def _lora_spec(model_id: str, label: str, adapter: str, source: str, weights_id: str, root_id: str) -> ModelSpec:
    return ModelSpec(
        id=model_id, label=label, base_source=source, adapter_path=adapter, weights_id=weights_id, root_id=root_id
    )


def model_get(model_id: str) -> ModelSpec | None:
    """The model named ``model_id``; only fine-tuned ids ("ft:...") touch the database."""
    models = available_models() if model_id.startswith(FINE_TUNED_PREFIX) else base_models()
    return next((spec for spec in models if spec.id == model_id), None)


def model_choices() -> list[tuple[str, str]]:
    return [(spec.id, spec.label) for spec in available_models()]
