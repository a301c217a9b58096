"""Serve Parley on one machine: daphne for the web and websockets, plus the
background-task worker for fine-tuning (at a lower priority, so chat stays quick)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run daphne and the fine-tuning worker together until interrupted."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument("--no-worker", action="store_true", help="Do not start the background-task worker.")

    def handle(self, *args: Any, **options: Any) -> None:
        processes: list[subprocess.Popen[bytes]] = []
        if not options["no_worker"]:
            worker = [sys.executable, "manage.py", "db_worker", "--queue-name", "default"]
            processes.append(subprocess.Popen(["nice", "-n", "10", *worker]))
        web = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            options["host"],
            "-p",
            str(options["port"]),
            "chatsite.asgi:application",
        ]
        processes.append(subprocess.Popen(web))
        self.stdout.write(f"Parley is starting at http://{options['host']}:{options['port']}/ (Ctrl+C stops it)")
        try:
            processes[-1].wait()
        except KeyboardInterrupt:
            pass
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        os._exit(processes[-1].returncode or 0)
