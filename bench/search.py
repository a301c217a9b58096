"""Search speed over one person's thousands of conversations.

    python -m bench.search                         # SQLite in a temporary folder
    python -m bench.search --postgres postgresql://127.0.0.1:5432/postgres

Seeds two people with ``--conversations`` conversations of six messages each (~80
words a message, like a real chat), then times, on the same data and queries,
Parley's search (``selectors.conversation_search``: one query over titles and an
EXISTS over messages, trigram-indexed on PostgreSQL, then the snippets) against a
baseline that does what a page without database search would: load the person's
conversations with their messages and match the words in Python. Both must return the
same conversations. Medians of ``--repeats`` runs; a table and one JSON line.
``--postgres`` creates a scratch database beside the one named and drops it after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

QUERIES = {"one rare phrase": "zebra crossing", "a common word pair": "topic 17"}


@contextmanager
def database(postgres: str | None) -> Iterator[str]:
    if postgres is None:
        with tempfile.TemporaryDirectory(prefix="parley-search-") as folder:
            yield f"sqlite:///{folder}/bench.sqlite3"
        return
    import psycopg

    name = f"parley_bench_search_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed_conversations(owners: list[Any], count: int, *, model_name: str = "bench") -> list[Any]:
    """``count`` conversations dealt round ``owners``, six ~80-word messages each; the
    third also holds the one rare phrase, "the zebra crossing" (tests use this too)."""
    from conversations.models import Conversation, Message

    chats = Conversation.objects.bulk_create(
        Conversation(
            owner=owners[i % len(owners)], title=f"Chat {i}", model_name=model_name, temperature=0.7, max_tokens=64
        )
        for i in range(count)
    )
    Message.objects.bulk_create(
        Message(conversation=chat, role=role, content=f"message {j} about topic {i} " + "filler words " * 40)
        for i, chat in enumerate(chats)
        for j, role in enumerate(["user", "assistant", "user", "assistant", "user", "assistant"])
    )
    Message.objects.create(conversation=chats[2], role="user", content="the zebra crossing")
    return chats


def seed(conversations: int) -> tuple[Any, int]:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from conversations.models import Message

    users = [get_user_model().objects.create_user(name, password=None) for name in ("reader", "other")]
    seed_conversations(users, conversations)
    if connection.vendor == "postgresql":  # as autovacuum would soon: the planner needs statistics
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return users[0], Message.objects.count()


def baseline_search(owner: Any, query: str, limit: int = 20) -> list[int]:
    from conversations.models import Conversation
    from conversations.selectors import search_terms

    terms = [term.lower() for term in search_terms(query)]
    found: list[int] = []
    chats = Conversation.objects.filter(owner=owner).order_by("-updated_at", "-id").prefetch_related("messages")
    for chat in chats:
        texts = [(chat.title or "").lower(), *(message.content.lower() for message in chat.messages.all())]
        if any(all(term in text for term in terms) for text in texts):
            found.append(chat.pk)
            if len(found) == limit:
                break
    return found


def parley_search(owner: Any, query: str) -> list[int]:
    from conversations.selectors import conversation_search

    return [hit.conversation.pk for hit in conversation_search(owner=owner, query=query)]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm caches on both sides alike
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=4000, help="across both people (default 4000)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--postgres", metavar="URL", help="run on PostgreSQL (a scratch database beside URL)")
    args = parser.parse_args()

    with database(args.postgres) as url:
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
        import django
        from django.core.management import call_command
        from django.db import connection

        django.setup()
        call_command("migrate", verbosity=0)
        owner, messages = seed(args.conversations)
        print(f"Search on {connection.vendor}: {args.conversations} conversations, {messages} messages")
        print(f"{'query':<22}{'Parley ms':>11}{'baseline ms':>13}{'ratio':>8}{'hits':>6}")
        rows = {}
        for label, query in QUERIES.items():
            ours, theirs = parley_search(owner, query), baseline_search(owner, query)
            if ours != theirs:
                raise SystemExit(f"{label}: Parley found {ours[:5]}..., the baseline {theirs[:5]}...")
            parley = median_seconds(lambda q=query: parley_search(owner, q), args.repeats)
            baseline = median_seconds(lambda q=query: baseline_search(owner, q), args.repeats)
            rows[label] = {
                "query": query,
                "parley_ms": round(parley * 1000, 1),
                "baseline_ms": round(baseline * 1000, 1),
                "ratio": round(baseline / parley, 1),
                "hits": len(ours),
            }
            print(f"{label:<22}{parley * 1000:>11.1f}{baseline * 1000:>13.1f}{baseline / parley:>7.1f}x{len(ours):>6}")
        summary = {"database": connection.vendor, "conversations": args.conversations, "messages": messages}
        print(json.dumps({"bench": "search", **summary, "queries": rows}))


if __name__ == "__main__":
    main()
