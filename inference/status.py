"""Queue depth and load of every generating process, shared through the database.

A process that starts an engine also starts a reporter thread that writes its
``EngineStatus`` row every ``INFERENCE_STATUS_INTERVAL_SECONDS``; the status page
and ``/status.json`` read those rows, so they show every machine's workers. Each
report first releases the weights of fine-tuned models deleted or hidden meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from conversations.models import Message
from inference.models import EngineStatus

logger = logging.getLogger(__name__)

PROCESS_ROLE = {"role": "web"}  # runworker sets "worker"
_started = threading.Event()
_began = timezone.now()


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def start_reporter() -> None:
    """Report this process's engines from now on (once per process)."""
    if _started.is_set() or not settings.INFERENCE_STATUS_REPORTING:
        return
    _started.set()
    threading.Thread(target=_report_forever, name="engine-status", daemon=True).start()


def _report_forever() -> None:
    from inference.engines import release_unused

    previous_tokens, previous_time = 0, time.monotonic()
    while True:
        try:
            release_unused()
        except Exception:  # the registry is in the database too; the report still goes out
            logger.warning("Could not check for deleted models", exc_info=True)
        try:
            tokens = report_once(previous_tokens, previous_time)
            previous_tokens, previous_time = tokens, time.monotonic()
        except Exception:  # the database may be briefly away; try again next time
            logger.warning("Could not report engine status", exc_info=True)
        finally:
            close_old_connections()
        time.sleep(settings.INFERENCE_STATUS_INTERVAL_SECONDS)


def report_once(previous_tokens: int = 0, previous_time: float | None = None) -> int:
    from inference.engines import loaded_engines

    stats = [(source, served.engine.stats()) for source, served in loaded_engines().items()]
    tokens = sum(int(s.get("tokens_generated", 0)) for _, s in stats)
    elapsed = time.monotonic() - previous_time if previous_time else 0.0
    now = timezone.now()
    EngineStatus.objects.update_or_create(
        process_id=process_id(),
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "role": PROCESS_ROLE["role"],
            "served_models": [
                {"source": source, "weights": s.get("weights", ""), "why": s.get("weights_reason", "")}
                for source, s in stats
            ],
            "active_streams": sum(int(s.get("active_streams", 0)) for _, s in stats),
            "queued_requests": sum(int(s.get("queued_requests", 0)) for _, s in stats),
            "tokens_generated": tokens,
            "tokens_per_second": round(max(0, tokens - previous_tokens) / elapsed, 1) if elapsed > 0 else 0.0,
            "started_at": _began,
            "last_seen": now,
        },
    )
    return tokens


def served_source(entry: Any) -> str:
    """A served model's source; rows written before weights were reported hold only it."""
    return str(entry["source"]) if isinstance(entry, dict) else str(entry)


@dataclass(frozen=True)
class Overview:
    processes: list[dict[str, Any]]
    replies_streaming: int
    active_streams: int
    queued_requests: int
    tokens_per_second: float


def status_overview() -> Overview:
    """Every process seen recently, whether it is up, and the totals."""
    interval = settings.INFERENCE_STATUS_INTERVAL_SECONDS
    now = timezone.now()
    rows = EngineStatus.objects.filter(last_seen__gte=now - timedelta(hours=1))
    processes: list[dict[str, Any]] = []
    for row in rows:
        up = (now - row.last_seen).total_seconds() <= 3 * interval
        processes.append(
            {
                "process": row.process_id,
                "role": row.role,
                "up": up,
                "models": [served_source(entry) for entry in row.served_models],
                "weights": [entry for entry in row.served_models if isinstance(entry, dict) and entry.get("weights")],
                "active_streams": row.active_streams if up else 0,
                "queued_requests": row.queued_requests if up else 0,
                "tokens_per_second": row.tokens_per_second if up else 0.0,
                "tokens_generated": row.tokens_generated,
                "last_seen": row.last_seen.isoformat(),
            }
        )
    live = [p for p in processes if p["up"]]
    return Overview(
        processes=processes,
        replies_streaming=Message.objects.filter(status=Message.Status.STREAMING).count(),
        active_streams=sum(p["active_streams"] for p in live),
        queued_requests=sum(p["queued_requests"] for p in live),
        tokens_per_second=round(sum(p["tokens_per_second"] for p in live), 1),
    )
