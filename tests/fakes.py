"""A scripted stand-in for the engine, for tests that need control over timing.

It speaks the engine's contract (``submit``/``cancel``, events delivered from its own
thread, exactly one FinishEvent per request) and replays a fixed list of text pieces
at a chosen pace, so a test can press Stop or drop a socket mid-reply reliably.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from inference.engine.types import EventCallback, FinishEvent, GenerationRequest, TokenEvent


class ScriptedEngine:
    def __init__(
        self, pieces: list[str], *, delay: float = 0.02, fail_after: int | None = None, hold_after: int | None = None
    ) -> None:
        self.pieces = pieces
        self.delay = delay
        self.fail_after = fail_after
        self.cancelled: set[str] = set()
        self.requests: list[GenerationRequest] = []
        self.started = threading.Event()
        # With ``hold_after``, each request stops after that many pieces (``holding`` is
        # set) until the test sets ``release``: a test can act mid-reply without racing.
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.release = threading.Event()
        self._threads: list[threading.Thread] = []

    def submit(self, request: GenerationRequest, callback: EventCallback) -> None:
        self.requests.append(request)
        thread = threading.Thread(target=self._run, args=(request, callback), daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = 10) -> bool:
        """Wait until every request has delivered its last event; False on timeout."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def cancel(self, request_id: str) -> None:
        self.cancelled.add(request_id)

    def add_adapter(self, name: str, path: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"active": 0, "queued": 0}

    def _run(self, request: GenerationRequest, callback: EventCallback) -> None:
        sent, reason, error = 0, "stop", None
        try:
            for piece in self.pieces[: request.params.max_new_tokens]:
                if request.request_id in self.cancelled:
                    reason = "cancelled"
                    break
                if self.fail_after is not None and sent >= self.fail_after:
                    raise RuntimeError("scripted failure")
                if self.hold_after is not None and sent == self.hold_after:
                    self.holding.set()
                    self.release.wait(30)
                time.sleep(self.delay)
                sent += 1
                callback(TokenEvent(request.request_id, piece, sent))
                self.started.set()
            else:
                if len(self.pieces) > request.params.max_new_tokens:
                    reason = "length"
        except RuntimeError as exc:
            reason, error = "error", str(exc)
        finally:
            callback(FinishEvent(request.request_id, reason, len(request.prompt_ids), sent, error))
