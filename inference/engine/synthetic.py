"""A model-free engine that writes filler text at a fixed pace.

It exists to measure and test the web tier (websockets, channel layer, database
flushes) at loads a real model on this hardware cannot produce: hundreds of open
sockets and a hundred concurrent streams. Select it with
``INFERENCE_BACKEND=synthetic``; it speaks the same contract as ``Engine``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

from .types import EventCallback, FinishEvent, GenerationRequest, TokenEvent

logger = logging.getLogger(__name__)

WORDS = ("parley ", "streams ", "tokens ", "quickly ", "to ", "every ", "open ", "socket ", "and ", "keeps ", "them. ")


@dataclass(order=True)
class _Due:
    at: float
    order: int
    request: GenerationRequest = field(compare=False)
    callback: EventCallback = field(compare=False)
    sent: int = field(default=0, compare=False)
    submitted: float = field(default=0.0, compare=False)
    first_token: float | None = field(default=None, compare=False)


class SyntheticEngine:
    def __init__(self, *, tokens_per_second: float = 20.0, first_token_seconds: float = 0.05, text: str = "") -> None:
        # Pieces of a given text (cut every 5 characters, so markup straddles deltas)
        # or the filler words, repeated until max_new_tokens.
        self.pieces = tuple(text[i : i + 5] for i in range(0, len(text), 5)) or WORDS
        self.interval = 1.0 / tokens_per_second
        self.first_token_seconds = first_token_seconds
        self._heap: list[_Due] = []
        self._cancelled: set[str] = set()
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="synthetic-engine", daemon=True)
        self.tokens_generated = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: GenerationRequest, callback: EventCallback) -> None:
        now = time.monotonic()
        due = _Due(now + self.first_token_seconds, next(self._order), request, callback, submitted=now)
        with self._wake:
            heapq.heappush(self._heap, due)
            self._wake.notify()

    def cancel(self, request_id: str) -> None:
        with self._wake:
            self._cancelled.add(request_id)
            self._wake.notify()

    def add_adapter(self, name: str, path: object) -> None:
        """Adapters change nothing here: the text is synthetic."""

    def remove_adapter(self, name: str) -> None:
        """See add_adapter."""

    def stats(self) -> dict[str, object]:
        with self._wake:
            return {"active_streams": len(self._heap), "queued_requests": 0, "tokens_generated": self.tokens_generated}

    def shutdown(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._heap or self._heap[0].at > time.monotonic()):
                    self._wake.wait(timeout=(self._heap[0].at - time.monotonic()) if self._heap else None)
                if self._stopping:
                    return
                due = heapq.heappop(self._heap)
                cancelled = due.request.request_id in self._cancelled
                self._cancelled.discard(due.request.request_id)
            self._advance(due, cancelled)

    def _advance(self, due: _Due, cancelled: bool) -> None:
        params = due.request.params
        if cancelled or due.sent >= params.max_new_tokens:
            self._finish(due, "cancelled" if cancelled else "length")
            return
        due.sent += 1
        self.tokens_generated += 1
        due.first_token = due.first_token or time.monotonic()
        try:
            piece = self.pieces[(due.sent - 1) % len(self.pieces)]
            due.callback(TokenEvent(due.request.request_id, piece, due.sent))
        except Exception:  # a failing caller must not stop everyone else's stream
            logger.exception("Callback failed for %s", due.request.request_id)
        due.at = time.monotonic() + self.interval
        with self._wake:
            heapq.heappush(self._heap, due)

    def _finish(self, due: _Due, reason: str) -> None:
        due.callback(
            FinishEvent(
                due.request.request_id,
                reason,  # type: ignore[arg-type]
                len(due.request.prompt_ids),
                due.sent,
                first_token_seconds=(due.first_token - due.submitted) if due.first_token else None,
                decode_seconds=(time.monotonic() - due.first_token) if due.first_token else None,
            )
        )
