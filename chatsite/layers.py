"""The channel layer of a single process (the default without ``REDIS_URL``).

Channels' ``InMemoryChannelLayer`` walks every channel and every group on each
``receive`` and ``group_send`` to drop expired messages and memberships, and sends
to a group through one task per member. With 500 open sockets that walk took
nearly half the event loop's time while 100 replies streamed (docs/performance.md).
This one does the same cleaning at most once a second (expiries are a minute and a
day) and sends to a group's members directly.
"""

from __future__ import annotations

import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer


class SingleProcessChannelLayer(InMemoryChannelLayer):
    clean_every_seconds = 1.0
    _cleaned_at = -clean_every_seconds

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= self.clean_every_seconds:
            self._cleaned_at = now
            super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:  # as Channels does: a full channel misses the message
                pass
