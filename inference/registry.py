"""Which models a user can pick, where each one's weights come from, and the sampling a
new chat on it starts with.

Functions that take ``user`` answer for that user: a fine-tuned model's ``visibility``
decides whether they may see and use it. Without ``user`` they answer for the server
(which weights to keep loaded, what a job runs on): every model that is served.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from inference.engine.loading import BUNDLED_DISPLAY_NAME, BUNDLED_MODEL

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

logger = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
FINE_TUNED_PREFIX = "ft:"
# Its authors' recommended sampling (the model card's example); the GGUF file names none, so
# it is declared here rather than written into the converted cache, which an older
# conversion would lack.
BUNDLED_SAMPLING = {"temperature": 0.2, "top_p": 0.9}
# A generation_config.json value is taken only where the engine and the chat accept it.
SAMPLING_VALID: dict[str, Callable[[float], bool]] = {
    "temperature": lambda value: 0.0 <= value <= 2.0,
    "top_p": lambda value: 0.0 < value <= 1.0,
}


class Catalogue(Protocol):
    def __call__(self, bases: list[ModelSpec], *, user: User | AnonymousUser | None = None) -> list[ModelSpec]: ...


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


def available_models(*, user: User | AnonymousUser | None = None) -> list[ModelSpec]:
    """Base models, then what each catalogue adds on them (the fine-tuned models whose base
    is available); with ``user``, only the models that user may use."""
    bases = base_models()
    return bases + [spec for catalogue in catalogues() for spec in catalogue(bases, user=user)]


def catalogues() -> list[Catalogue]:
    """The functions that list models beyond the bases, named by ``INFERENCE_MODEL_CATALOGUES``.

    They are named in settings rather than imported so that this app needs nothing from
    the apps that make models (the finetuning app's ``catalogue.fine_tuned_models``)."""
    return [import_string(path) for path in settings.INFERENCE_MODEL_CATALOGUES]


def lora_spec(model_id: str, label: str, adapter: str, source: str, weights_id: str, root_id: str) -> ModelSpec:
    return ModelSpec(
        id=model_id, label=label, base_source=source, adapter_path=adapter, weights_id=weights_id, root_id=root_id
    )


def model_gone(model_name: str) -> str:
    """What a chat says when its model was deleted, hidden or restricted to others since
    the conversation picked it (the socket's refusal and a reply's error alike)."""
    return f"The model {model_name} is not available to you any more; pick another in Settings."


def is_fine_tuned(model_id: str) -> bool:
    return model_id.startswith(FINE_TUNED_PREFIX)


def model_get(model_id: str, *, user: User | AnonymousUser | None = None) -> ModelSpec | None:
    """The model named ``model_id`` (None if ``user`` may not use it); only fine-tuned ids
    ("ft:...") touch the database."""
    models = available_models(user=user) if model_id.startswith(FINE_TUNED_PREFIX) else base_models()
    return next((spec for spec in models if spec.id == model_id), None)


def model_choices(*, user: User | AnonymousUser | None = None) -> list[tuple[str, str]]:
    return [(spec.id, spec.label) for spec in available_models(user=user)]


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling settings a new chat on a model starts with."""

    temperature: float
    top_p: float


def sampling_defaults(*, model_id: str) -> SamplingDefaults:
    """New chats' sampling on ``model_id``, each value from the first that names it: the
    environment (``INFERENCE_SAMPLING_OVERRIDES``), the model, the ``INFERENCE_DEFAULT_*``
    defaults."""
    spec = model_get(model_id)
    values = {
        "temperature": settings.INFERENCE_DEFAULT_TEMPERATURE,
        "top_p": settings.INFERENCE_DEFAULT_TOP_P,
        **(_model_sampling(spec) if spec is not None else {}),
        **settings.INFERENCE_SAMPLING_OVERRIDES,
    }
    return SamplingDefaults(temperature=values["temperature"], top_p=values["top_p"])


def _model_sampling(spec: ModelSpec) -> dict[str, float]:
    """A model's own sampling; a fine-tuned model takes its base's for what its folder leaves out."""
    root = model_get(spec.root_id) if spec.root_id is not None else None
    inherited = _source_sampling(root.base_source) if root is not None else {}
    return {**inherited, **_source_sampling(spec.base_source)}


def _source_sampling(source: str) -> dict[str, float]:
    if source == BUNDLED_MODEL:
        return dict(BUNDLED_SAMPLING)
    return generation_config_sampling(Path(source).expanduser())


def generation_config_sampling(folder: Path) -> dict[str, float]:
    """The temperature and top_p a model folder's ``generation_config.json`` names.

    A missing or unreadable file names none; a value out of range is left out (logged).
    ``do_sample`` is not read (vLLM does the same), and transformers' ``repetition_penalty``
    is not taken: it divides logits, where the
    chat's repetition penalty is OpenAI's subtracted frequency penalty, another scale.
    """
    try:
        config = json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    found = {}
    for name, valid in SAMPLING_VALID.items():
        value = _number(config.get(name))
        if value is not None and valid(value):
            found[name] = value
        elif config.get(name) is not None:
            logger.warning("Ignoring %s=%r in %s: out of range", name, config[name], folder / "generation_config.json")
    return found


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
