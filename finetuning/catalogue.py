"""Which fine-tuned models exist, and for whom: the finetuning app's catalogue for the
model registry (``inference.registry``, which finds it through the
``INFERENCE_MODEL_CATALOGUES`` setting)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import BooleanField, Case, ExpressionWrapper, Q, Value, When

from finetuning.models import FineTunedModel
from inference.registry import FINE_TUNED_PREFIX, ModelSpec, lora_spec

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


def _usable_by(user: User | AnonymousUser) -> Q:
    """The fine-tuned models ``user`` (not a superuser) may use: those for everyone, those
    for staff if they are staff, those for their groups."""
    usable = Q(visibility=FineTunedModel.Visibility.EVERYONE)
    if user.is_staff:
        usable |= Q(visibility=FineTunedModel.Visibility.STAFF)
    if user.is_authenticated:
        members = FineTunedModel.groups.through.objects.filter(group__user=user).values("finetunedmodel_id")
        usable |= Q(visibility=FineTunedModel.Visibility.GROUPS, pk__in=members)
    return usable


def fine_tuned_models(bases: list[ModelSpec], *, user: User | AnonymousUser | None = None) -> list[ModelSpec]:
    """Visible fine-tuned models, each on the weights it was trained on.

    A full model is a whole model folder of its own. A LoRA model runs on its
    ``base_model``'s weights: a base, or a full fine-tuned model (hidden or not, usable by
    ``user`` or not: those only take it out of the picker) whose own base is available.
    """
    sources = {spec.id: spec.base_source for spec in bases}
    if user is None or user.is_superuser:
        usable: Value | Case = Value(True)
    else:
        usable = Case(When(_usable_by(user), then=Value(True)), default=Value(False))
    rows = list(
        FineTunedModel.objects.filter(Q(base_model__in=sources) | Q(base_model__startswith=FINE_TUNED_PREFIX))
        .annotate(usable=ExpressionWrapper(usable, output_field=BooleanField()))
        .values_list("public_id", "label", "base_model", "adapter_path", "method", "hidden", "usable")
    )
    wholes = {row[0]: (row[3], row[2]) for row in rows if row[4] == "full" and row[2] in sources}
    specs = []
    for model_id, label, base_id, path, method, hidden, may_use in rows:
        if hidden or not may_use:
            continue
        if model_id in wholes:
            specs.append(ModelSpec(id=model_id, label=label, base_source=path, root_id=base_id))
        elif method == "lora" and base_id in sources:
            specs.append(lora_spec(model_id, label, path, sources[base_id], base_id, base_id))
        elif method == "lora" and base_id in wholes:
            whole_path, root_id = wholes[base_id]
            specs.append(lora_spec(model_id, label, path, whole_path, base_id, root_id))
    return specs
