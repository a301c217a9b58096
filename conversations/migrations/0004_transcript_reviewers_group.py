"""The "Transcript reviewers" group: read transcripts and tag them, nothing more."""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Transcript reviewers"
CODENAMES = [
    "view_conversation",
    "view_message",
    "view_messagefeedback",
    "view_generationrecord",
    "view_transcripttag",
    "add_transcripttag",
    "delete_transcripttag",
]


def create_group(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Permissions are normally created after all migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.set(Permission.objects.filter(content_type__app_label="conversations", codename__in=CODENAMES))


def remove_group(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_feedback_generation_review"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
