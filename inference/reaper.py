"""Reaps what dead workers left behind, on a timer in every process that serves users.

A generation worker that dies leaves its replies "streaming": they count against their
owner's concurrent streams until something fails them, and a conversation socket's
watchdog only does so while someone has that conversation open. A training worker
that dies leaves its job "running" (or, after other crashes, "validating_files" or
"queued") for the admin and API clients alike. So each process that serves people
(daphne, and the generation workers, which serve through the same ASGI application)
runs ``reap_once`` every ``INFERENCE_REAP_INTERVAL_SECONDS`` on its event loop. Every
change is a conditional update, so reapers in many processes never fight.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from inference.finetuning.services import finetune_jobs_recover
from inference.generation import conversation_group
from inference.services import EndedStream, streams_fail_stale

logger = logging.getLogger(__name__)

ASGIApp = Any


@dataclass(frozen=True)
class Reaped:
    replies: list[EndedStream]
    jobs: int


async def reap_once() -> Reaped:
    """1. Fail the replies whose job stopped beating. 2. Tell the sockets open on their
    conversations. 3. Settle fine-tuning jobs a crash left unfinished."""
    ended = await database_sync_to_async(streams_fail_stale)()
    for stream in ended:
        await _announce_end(stream)
    jobs = await database_sync_to_async(finetune_jobs_recover)()
    return Reaped(replies=ended, jobs=jobs)


async def _announce_end(stream: EndedStream) -> None:
    event = {"type": "chat.finished", "message_id": stream.message_id}
    try:
        await get_channel_layer().group_send(conversation_group(stream.conversation_id), event)
    except Exception:  # the layer is down: an open socket's watchdog reads the database
        logger.warning("Could not announce the end of reply %s", stream.message_id, exc_info=True)


async def reap_forever() -> None:
    while True:
        await asyncio.sleep(settings.INFERENCE_REAP_INTERVAL_SECONDS)
        try:
            await reap_once()
        except Exception:  # the database may be briefly away; the next tick tries again
            logger.warning("Could not reap dead workers' replies and jobs", exc_info=True)


class ReaperStarter:
    """ASGI middleware: the first connection or channel message a process serves starts
    its reaper (daphne has no start-up hook; a process that serves nobody needs none).

    It keeps one reaper per event loop: daphne runs one loop, tests make many.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reapers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    def reaper(self) -> asyncio.Task[None] | None:
        """This event loop's reaper, started on first call (None with ``INFERENCE_REAPER`` off)."""
        if not settings.INFERENCE_REAPER:
            return None
        loop = asyncio.get_running_loop()
        task = self.reapers.get(loop)
        if task is None or task.done():
            task = self.reapers[loop] = loop.create_task(reap_forever(), name="parley-reaper")
        return task

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        self.reaper()
        return await self.app(scope, receive, send)
