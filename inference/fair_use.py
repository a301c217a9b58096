"""Fair use of the model: how many generations one user runs at once, chat replies and
API choices together (``INFERENCE_MAX_STREAMS_PER_USER``).

Chat replies count as the database has them (status "streaming"); callers pass that
count in. API choices hold slots in Django's cache, which is Redis when ``REDIS_URL``
is set, so every process sees every slot: ``api_slots_take`` claims one numbered slot
per choice with an atomic add, ``api_slots_keep`` refreshes them while the request's
engine streams run and lets them go once every stream has ended. A process that dies
holding slots loses them after ``SLOT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from inference.gateway import Stream
from inference.runtime import process_runtime

logger = logging.getLogger(__name__)

SLOT_SECONDS = 60
RETRY_AFTER_SECONDS = 5


class StreamsLimitReached(Exception):
    """The user already runs their share of generations; the message says how many."""

    def __init__(self, *, chat: int, api: int, wanted: int) -> None:
        limit = settings.INFERENCE_MAX_STREAMS_PER_USER
        running = f"{chat + api} generation{'s' if chat + api != 1 else ''} running"
        super().__init__(
            f"You have {running} ({chat} in chat, {api} through the API) and may run {limit} at once; "
            f"this needs {wanted} more. Wait for one to finish."
        )


@dataclass
class ApiSlots:
    """Slots one API request holds: cache keys whose value is ``token``."""

    keys: list[str]
    token: str

    def refresh(self) -> None:
        for key in self.keys:
            cache.touch(key, SLOT_SECONDS)

    def release(self) -> None:
        held = cache.get_many(self.keys)
        cache.delete_many([key for key, value in held.items() if value == self.token])


def _slot_keys(user_id: int) -> list[str]:
    return [f"parley:streams:{user_id}:{slot}" for slot in range(settings.INFERENCE_MAX_STREAMS_PER_USER)]


def api_slots_held(*, user_id: int) -> int:
    """How many generations the user runs through the API now, in every process."""
    return len(cache.get_many(_slot_keys(user_id)))


def api_slots_take(*, user_id: int, count: int, chat_streams: int) -> ApiSlots:
    """Claim ``count`` slots, or raise StreamsLimitReached (holding nothing).

    Two requests racing for the last slots may both be refused, never both admitted.
    """
    keys, slots = _slot_keys(user_id), ApiSlots(keys=[], token=uuid.uuid4().hex)
    for key in keys:
        if len(slots.keys) == count or chat_streams + count > len(keys):
            break
        if cache.add(key, slots.token, SLOT_SECONDS):
            slots.keys.append(key)
    api = api_slots_held(user_id=user_id)
    if len(slots.keys) < count or chat_streams + api > len(keys):
        slots.release()
        raise StreamsLimitReached(chat=chat_streams, api=api - len(slots.keys), wanted=count)
    return slots


def api_slots_keep(slots: ApiSlots, *, streams: Sequence[Stream]) -> None:
    """Hold ``slots`` until every one of ``streams`` has ended, then let them go."""
    process_runtime().background_keep(asyncio.get_running_loop().create_task(_keep(slots, streams)))


async def _keep(slots: ApiSlots, streams: Sequence[Stream]) -> None:
    ended = [asyncio.ensure_future(stream.ended.wait()) for stream in streams]
    try:
        while True:
            _, running = await asyncio.wait(ended, timeout=SLOT_SECONDS / 3)
            if not running:
                return
            await sync_to_async(slots.refresh)()
    finally:
        for waiter in ended:
            waiter.cancel()
        try:
            await sync_to_async(slots.release)()
        except Exception:  # the process is shutting down: the slots expire by themselves
            logger.warning("Could not let go of generation slots %s", slots.keys, exc_info=True)
