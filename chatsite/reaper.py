"""Reaps what dead workers left behind, on a timer in every process that serves users.

A generation worker that dies leaves its replies "streaming": they count against their
owner's concurrent streams until something fails them, and a conversation socket's
watchdog only does so while someone has that conversation open. A training worker
that dies leaves its job "running" (or, after other crashes, "validating_files" or
"queued") for the admin and API clients alike. So each process that serves people
(daphne, and the generation workers, which serve through the same ASGI application)
runs ``reap_once`` every ``INFERENCE_REAP_INTERVAL_SECONDS`` on its event loop, where
the channel layer it announces on lives; the timer is a chore of the process's model
runtime's housekeeping thread (inference/runtime.py). Every change is a conditional
update, so reapers in many processes never fight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from conversations.generation import conversation_group
from conversations.streams import EndedStream, streams_fail_stale
from finetuning.services import finetune_jobs_recover
from inference.runtime import process_runtime

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


async def reap_tick() -> None:
    try:
        await reap_once()
    except Exception:  # the database may be briefly away; the next tick tries again
        logger.warning("Could not reap dead workers' replies and jobs", exc_info=True)


class LoopReaper:
    """A housekeeping chore: each time it runs, reap on ``loop`` (skipped while the last
    reap is still running there); dropped once the loop has closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: concurrent.futures.Future[None] | None = None

    def __call__(self) -> bool:
        if self.loop.is_closed():
            return False
        if self.pending is None or self.pending.done():
            self.pending = asyncio.run_coroutine_threadsafe(reap_tick(), self.loop)
        return True


def _chore_name(loop: asyncio.AbstractEventLoop) -> str:
    return f"reaper-{id(loop)}"


def reaper_start() -> None:
    """Reap on this event loop from now on (once per loop; not with ``INFERENCE_REAPER`` off)."""
    if not settings.INFERENCE_REAPER:
        return
    loop = asyncio.get_running_loop()
    process_runtime().chore_add(_chore_name(loop), LoopReaper(loop), every=_reap_interval)


def reaper_stop() -> None:
    """No more reaping on this event loop."""
    process_runtime().chore_remove(_chore_name(asyncio.get_running_loop()))


def _reap_interval() -> float:
    return float(settings.INFERENCE_REAP_INTERVAL_SECONDS)


class ReaperStarter:
    """ASGI middleware: the first connection or channel message a process serves starts
    its reaper (daphne has no start-up hook; a process that serves nobody needs none)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        reaper_start()
        return await self.app(scope, receive, send)
