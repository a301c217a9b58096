"""Why a fine-tuning job stopped, which epoch's weights it kept, and what it held out."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("inference", "0006_finetunedmodel_visibility")]

    operations = [
        migrations.AddField(
            model_name="finetuningjob",
            name="stop_reason",
            field=models.TextField(blank=True, help_text="Why training stopped, e.g. “learnt 64/64 training examples”."),
        ),
        migrations.AddField(
            model_name="finetuningjob",
            name="kept_epoch",
            field=models.PositiveIntegerField(blank=True, null=True, help_text="The epoch whose weights were kept."),
        ),
        migrations.AddField(
            model_name="finetuningjob",
            name="validation_note",
            field=models.TextField(blank=True, help_text="What the automatic split held out, and why."),
        ),
    ]
