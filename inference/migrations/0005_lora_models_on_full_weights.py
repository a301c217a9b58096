"""File LoRA models trained on a full fine-tuned model under that model's weights.

Before this, such an adapter was registered against the full model's own base, so it
was served on weights it was not trained on. Its job names the model it started
from: a full model (the adapter runs on it), or a LoRA model (it runs where that one
does). Models without a job are left as they are.
"""

from __future__ import annotations

from django.db import migrations


def refile(apps, schema_editor):  # type: ignore[no-untyped-def]
    FineTunedModel = apps.get_model("inference", "FineTunedModel")
    methods = dict(FineTunedModel.objects.values_list("public_id", "method"))
    runs_on: dict[str, str] = {}
    loras = FineTunedModel.objects.filter(method="lora", job__isnull=False).select_related("job")
    for model in loras.order_by("created_at", "pk"):
        start = model.job.base_model
        target = start if methods.get(start) == "full" else runs_on.get(start, model.base_model)
        runs_on[model.public_id] = target
        if target != model.base_model:
            model.base_model = target
            model.save(update_fields=["base_model"])


class Migration(migrations.Migration):
    dependencies = [("inference", "0004_engine_status")]

    operations = [migrations.RunPython(refile, migrations.RunPython.noop)]
