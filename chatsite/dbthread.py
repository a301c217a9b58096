"""Channels' database thread keeps its database connection between calls.

Consumers and generation jobs reach the database through ``database_sync_to_async``,
which runs every call on one thread (asgiref's ``SyncToAsync.single_thread_executor``)
and closes "old" connections before and after it. With ``CONN_MAX_AGE = 0`` that
reopened the database on every call: ~0.7 ms on SQLite, which reads the whole schema
again, and a hundred replies starting at once queued behind those reopenings
(docs/performance.md). That thread lives as long as the process, so its connection
is kept, with a health check before each reuse; Django still closes it after an
error that left it unusable. Every other thread (one per HTTP request under ASGI)
follows ``CONN_MAX_AGE`` as before.
"""

from __future__ import annotations

import threading
from typing import Any

from asgiref.sync import SyncToAsync
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


def keep_database_thread_connection(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # A private attribute of the executor: should asgiref change it, connections are
    # simply reopened as before.
    if threading.current_thread() in getattr(SyncToAsync.single_thread_executor, "_threads", ()):
        connection.close_at = None
        connection.health_check_enabled = True  # type: ignore[attr-defined]  # (missing from django-stubs)


def install() -> None:
    connection_created.connect(keep_database_thread_connection, dispatch_uid="parley-keep-database-thread-connection")
