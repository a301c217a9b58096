"""Who may use a fine-tuned model: everyone (as before), staff, or members of named groups."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("inference", "0005_lora_models_on_full_weights"),
    ]

    operations = [
        migrations.AddField(
            model_name="finetunedmodel",
            name="visibility",
            field=models.CharField(
                choices=[("everyone", "Everyone"), ("staff", "Staff only"), ("groups", "Members of the groups chosen")],
                default="everyone",
                help_text="Who sees it in the model picker and may use it, in the chat and through the API. "
                "Superusers always may.",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="finetunedmodel",
            name="groups",
            field=models.ManyToManyField(
                blank=True,
                help_text="With “Members of the groups chosen”: the groups whose members may use it.",
                related_name="+",
                to="auth.group",
            ),
        ),
    ]
