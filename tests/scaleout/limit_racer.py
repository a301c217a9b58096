"""One of two web processes racing to start a turn for the same user (run by test_user_limits).

``python -m tests.scaleout.limit_racer NAME OTHER CONVERSATION_PK RACE_DIR`` with
``DATABASE_URL`` on PostgreSQL. Both racers wait at a start line (files in RACE_DIR),
then start a turn in their own conversation. Once a racer has counted the user's
replies it holds its transaction open until the other racer has counted too, or is
waiting on a lock: so without a lock shared by both processes, both count before
either creates, every time. Prints ``started`` or ``refused: <the message>``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

DEADLINE_SECONDS = 30


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.01)


def main(name: str, other: str, conversation_pk: int, race_dir: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.core.exceptions import ValidationError
    from django.db import connection

    from conversations import services
    from conversations.models import Conversation

    counted = services._owner_stream_counts

    def other_is_waiting_on_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
            return bool(cursor.fetchone()[0])

    def count_then_hold(**arguments: Any) -> dict[str, int]:
        counts = counted(**arguments)
        (race_dir / f"{name}.counted").touch()
        wait_for(lambda: (race_dir / f"{other}.counted").exists() or other_is_waiting_on_a_lock(), "the other racer")
        return counts

    services._owner_stream_counts = count_then_hold
    conversation = Conversation.objects.get(pk=conversation_pk)
    (race_dir / f"{name}.ready").touch()
    wait_for(lambda: (race_dir / f"{other}.ready").exists(), "the start line")
    try:
        services.turn_start(conversation=conversation, text=f"from {name}")
    except ValidationError as exc:
        print("refused: " + " ".join(exc.messages))
    else:
        print("started")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
