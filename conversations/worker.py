"""The generation worker: ``manage.py runworker inference``.

It takes two kinds of work from the inference channel and runs both on its own
engine: chat generation jobs (keyed by the assistant message; the job writes to the
database and the conversation's group itself) and API streams (events sent back to
the asking web process's reply channel). Stops for API streams arrive on this
worker's own channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from channels.consumer import AsyncConsumer

from conversations.generation import generation_start_local
from inference import gateway

logger = logging.getLogger(__name__)


class GenerationWorkerConsumer(AsyncConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The API streams this worker serves, by request id, and the tasks serving them.
        self.streams: dict[str, gateway.Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def generate(self, event: dict[str, Any]) -> None:
        logger.info("Generation worker %d took reply %s", os.getpid(), event["message_pk"])
        generation_start_local(message_pk=int(event["message_pk"]))

    async def stream_open(self, message: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(
            gateway.serve_remote_stream(message, worker_channel=self.channel_name, streams=self.streams)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stream_cancel(self, message: dict[str, Any]) -> None:
        stream = self.streams.get(message["request_id"])
        if stream is not None:
            stream.cancel()
