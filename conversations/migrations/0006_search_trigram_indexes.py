"""Search indexes on PostgreSQL: trigram GIN indexes that serve ``icontains``.

Django turns ``content__icontains`` into ``UPPER(content::text) LIKE UPPER('%word%')``
on PostgreSQL, so the indexes are on exactly that expression. SQLite has no index
for infix matching; there the search scans the owner's messages (fast enough for
thousands of conversations, see conversations.selectors.conversation_search).
"""

from __future__ import annotations

from django.db import migrations

INDEXES = [
    ("conversations_message_content_trgm", "conversations_message", "content"),
    ("conversations_conversation_title_trgm", "conversations_conversation", "title"),
]


def create_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, column in INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ((UPPER("{column}"::text)) gin_trgm_ops)'
        )


def drop_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("conversations", "0005_message_heartbeat")]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
