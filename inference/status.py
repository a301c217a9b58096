"""Queue depth and load of every generating process, shared through the database.

Each process's model runtime hands a ``RuntimeSnapshot`` to ``report_once`` every
``INFERENCE_STATUS_INTERVAL_SECONDS`` (inference/runtime.py's housekeeping thread),
which writes the process's ``EngineStatus`` row; the status page and ``/status.json``
read those rows (chatsite/views.py), so they show every machine's workers. Reporting reads the snapshot
and changes nothing in the runtime.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

from inference.models import EngineStatus

if TYPE_CHECKING:
    from inference.runtime import RuntimeSnapshot


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def report_once(snapshot: RuntimeSnapshot, previous: RuntimeSnapshot | None = None) -> None:
    """Write this process's row from ``snapshot``; its tokens per second count from
    ``previous``, the snapshot reported last (none: 0)."""
    tokens = snapshot.tokens_generated
    elapsed = snapshot.taken_at - previous.taken_at if previous is not None else 0.0
    rate = max(0, tokens - previous.tokens_generated) / elapsed if previous is not None and elapsed > 0 else 0.0
    EngineStatus.objects.update_or_create(
        process_id=process_id(),
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "role": str(snapshot.role),
            "served_models": [
                {"source": model.source, "weights": model.weights, "why": model.weights_reason}
                for model in snapshot.served
            ],
            "active_streams": snapshot.active_streams,
            "queued_requests": snapshot.queued_requests,
            "tokens_generated": tokens,
            "tokens_per_second": round(rate, 1),
            "started_at": snapshot.started_at,
            "last_seen": timezone.now(),
        },
    )


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


def status_overview(*, replies_streaming: int) -> Overview:
    """Every process seen recently, whether it is up, and the totals; ``replies_streaming``
    comes from the caller, who knows the chats (this app does not)."""
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
        replies_streaming=replies_streaming,
        active_streams=sum(p["active_streams"] for p in live),
        queued_requests=sum(p["queued_requests"] for p in live),
        tokens_per_second=round(sum(p["tokens_per_second"] for p in live), 1),
    )
