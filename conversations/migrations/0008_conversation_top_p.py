# Existing conversations sampled with top_p 1.0 (every token); the default keeps that.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_conversation_frequency_penalty"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="top_p",
            field=models.FloatField(default=1.0),
        ),
    ]
