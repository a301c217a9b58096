"""The generation worker: ``manage.py runworker inference`` consumes generation jobs
sent on the inference channel and runs each as a task on its own engine."""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer

from inference.generation import generation_start_local


class GenerationWorkerConsumer(AsyncConsumer):
    async def generate(self, event: dict[str, Any]) -> None:
        generation_start_local(message_pk=int(event["message_pk"]))
