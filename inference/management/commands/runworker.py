"""``manage.py runworker inference``: channels' worker, made to survive a Redis restart.

Channels' own worker exits when a receive from the channel layer fails. A generation
worker should instead wait for Redis to come back and carry on, so this command (it
shadows channels' one: ``inference`` comes before ``channels`` in INSTALLED_APPS)
retries the receive with a capped backoff. Jobs already running keep running; they
write to the database, which is the record of truth.
"""

from __future__ import annotations

import asyncio
import logging

from channels.management.commands.runworker import Command as ChannelsRunworker
from channels.worker import Worker

from inference.apps import runtime_for
from inference.runtime import ProcessRole, process_runtime_install

logger = logging.getLogger(__name__)


class ResilientWorker(Worker):  # type: ignore[misc]
    async def listener(self, channel: str) -> None:
        delay = 0.5
        while True:
            try:
                message = await self.channel_layer.receive(channel)
            except Exception as exc:  # Redis down or restarting; CancelledError still stops us
                logger.warning("Channel layer unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            if not message.get("type"):
                logger.error("Dropped a message without a type on %s", channel)
                continue
            queue = self.get_or_create_application_instance(channel, {"type": "channel", "channel": channel})
            await queue.put(message)


class Command(ChannelsRunworker):  # type: ignore[misc]
    worker_class = ResilientWorker

    def handle(self, *args: object, **options: object) -> None:
        process_runtime_install(runtime_for(ProcessRole.WORKER))
        super().handle(*args, **options)
