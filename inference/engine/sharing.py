"""Sharing one machine's cores between chat and training.

A serving process says when one of its engines is generating by keeping a marker file
in a folder of the machine (``ChatActivity.set_busy``: the file exists while the engine
has work, its name starts with the process id). A training run on the same machine
polls ``ChatActivity.busy()`` between forward passes, and ``ComputeShare`` gives it
every core it was granted while chat is quiet and only ``yield_threads`` while a reply
is being written, so that a reply's first token does not wait behind a training step.
Training on another machine sees no markers and never yields, as it should.

Markers of processes that died are ignored and removed, so a crash cannot leave
training yielding for ever.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class ChatActivity:
    """The marker files of the engines of one machine that are generating right now."""

    def __init__(self, folder: Path | str, name: str = "engine") -> None:
        self.folder = Path(folder)
        self.marker = self.folder / f"{os.getpid()}-{name}"
        self._warned = False

    def set_busy(self, busy: bool) -> None:
        """Say whether this engine has work (called on every change, from its thread)."""
        try:
            if busy:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.marker.touch()
            else:
                self.marker.unlink(missing_ok=True)
        except OSError as exc:  # a read-only folder must not stop chat
            if not self._warned:
                logger.warning("Cannot mark chat activity in %s: %s", self.folder, exc)
                self._warned = True

    def busy(self) -> bool:
        """Whether any living process of this machine is generating a reply."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return False
        for entry in entries:
            pid = entry.name.partition("-")[0]
            if pid.isdigit() and _alive(int(pid)):
                return True
            try:
                os.unlink(entry.path)  # left by a process that is gone
            except OSError:
                pass
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ComputeShare:
    """How many threads a training run uses now: ``threads`` while ``chat_busy()`` is
    false, ``yield_threads`` while it is true; ``pace()`` is called between forward
    passes and adjusts torch's thread count (checking at most every ``poll_seconds``)."""

    threads: int
    yield_threads: int = 1
    chat_busy: Callable[[], bool] | None = None
    poll_seconds: float = 0.05
    yielded_seconds: float = 0.0
    _yielding: bool = False
    _since: float = field(default_factory=time.perf_counter)
    _checked: float = -1.0

    def pace(self) -> None:
        if self.chat_busy is None:
            return
        now = time.perf_counter()
        if now - self._checked < self.poll_seconds:
            return
        self._checked = now
        yielding = self.chat_busy()
        if yielding != self._yielding:
            if self._yielding:
                self.yielded_seconds += now - self._since
            self._yielding, self._since = yielding, now
        want = max(1, min(self.yield_threads, self.threads)) if yielding else self.threads
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    def finish(self) -> None:
        if self._yielding:
            self.yielded_seconds += time.perf_counter() - self._since
            self._yielding = False
