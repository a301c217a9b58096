"""The fine-tuning models now live in the finetuning app (finetuning/migrations/0001),
keeping their tables: drop them from this app's state only."""

from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0007_finetuningjob_stop_reason"),
        ("finetuning", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="FineTunedModel"),
                migrations.DeleteModel(name="FineTuningMetric"),
                migrations.DeleteModel(name="FineTuningEvent"),
                migrations.DeleteModel(name="FineTuningJob"),
                migrations.DeleteModel(name="TrainingFile"),
            ],
            database_operations=[],
        ),
    ]
