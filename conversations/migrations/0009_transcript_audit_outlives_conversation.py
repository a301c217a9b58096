"""Audit records name their conversation by public id (no cascading key) and keep the
owner's username, so they outlive the conversation; searches are recorded too."""

from __future__ import annotations

from django.db import migrations, models


def copy_conversation_ids(apps, schema_editor):  # type: ignore[no-untyped-def]
    TranscriptView = apps.get_model("conversations", "TranscriptView")
    for view in TranscriptView.objects.select_related("conversation__owner").iterator():
        view.conversation_public_id = view.conversation.public_id
        view.owner_username = view.conversation.owner.username
        view.save(update_fields=["conversation_public_id", "owner_username"])


def restore_conversations(apps, schema_editor):  # type: ignore[no-untyped-def]
    TranscriptView = apps.get_model("conversations", "TranscriptView")
    Conversation = apps.get_model("conversations", "Conversation")
    ids = dict(Conversation.objects.values_list("public_id", "pk"))
    for view in TranscriptView.objects.all():
        if view.conversation_public_id in ids:
            view.conversation_id = ids[view.conversation_public_id]
            view.save(update_fields=["conversation"])
        else:  # the old schema cannot hold a record without its conversation
            view.delete()


class Migration(migrations.Migration):
    dependencies = [("conversations", "0008_conversation_top_p")]

    operations = [
        migrations.AddField(
            model_name="transcriptview",
            name="conversation_public_id",
            field=models.UUIDField(blank=True, db_index=True, null=True),
        ),
        migrations.AddField(
            model_name="transcriptview",
            name="owner_username",
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.AddField(
            model_name="transcriptview",
            name="query",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name="transcriptview",
            name="conversation",
            field=models.ForeignKey(
                null=True,
                on_delete=models.deletion.CASCADE,
                related_name="staff_views",
                to="conversations.conversation",
            ),
        ),
        migrations.RunPython(copy_conversation_ids, restore_conversations),
        migrations.RemoveField(model_name="transcriptview", name="conversation"),
        migrations.AlterField(
            model_name="transcriptview",
            name="what",
            field=models.CharField(
                choices=[
                    ("transcript", "Opened the transcript"),
                    ("inspect", "Inspected a reply's prompt"),
                    ("export", "Exported the transcript"),
                    ("dataset", "Built a dataset from it"),
                    ("search", "Searched transcripts"),
                ],
                default="transcript",
                max_length=40,
            ),
        ),
        migrations.AlterModelOptions(name="transcriptview", options={"ordering": ["-viewed_at", "-id"]}),
    ]
