"""Mark replies left "streaming" by a server that stopped, so no reply hangs forever."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from conversations.streams import streams_recover_abandoned


class Command(BaseCommand):
    help = "Mark replies that were streaming when the server stopped as failed (run before starting)."

    def handle(self, *args: Any, **options: Any) -> None:
        count = streams_recover_abandoned(reason="The server stopped while this reply was being written.")
        self.stdout.write(f"Marked {count} interrupted repl{'y' if count == 1 else 'ies'} as failed.")
