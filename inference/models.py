"""What each generating process reports about itself (inference/status.py)."""

from __future__ import annotations

from django.db import models


class EngineStatus(models.Model):
    """What one process's engines are doing, reported every few seconds.

    Every process that runs generation (the web process in local mode, each
    ``runworker inference`` in remote mode) upserts its row, so the status page
    shows queue depth and load across machines from the database alone.
    """

    process_id = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    role = models.CharField(max_length=16)  # "web" (local mode) or "worker"
    served_models = models.JSONField(default=list)
    active_streams = models.PositiveIntegerField(default=0)
    queued_requests = models.PositiveIntegerField(default=0)
    tokens_generated = models.PositiveBigIntegerField(default=0)
    tokens_per_second = models.FloatField(default=0.0)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["hostname", "pid"]
        verbose_name = "engine status"
        verbose_name_plural = "engine statuses"

    def __str__(self) -> str:
        return f"{self.role} {self.hostname}:{self.pid}"
