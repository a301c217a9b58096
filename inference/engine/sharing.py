"""Sharing one machine's cores between chat and training.

A serving process says when one of its engines is generating by keeping a marker file
in a folder of the machine (``ChatActivity.set_busy``: the file exists while the engine
has work, its name starts with the process id). A training run on the same machine
polls ``ChatActivity.busy()`` between forward passes, and ``ComputeShare`` gives it the
cores it was granted while chat is quiet (fewer where measuring shows fewer are faster,
on a machine busy with other work) and only ``yield_threads`` while a reply is being
written, so that a reply's first token does not wait behind a training step.
Training on another machine sees no markers and never yields, as it should.

Markers of processes that died are ignored and removed, so a crash cannot leave
training yielding for ever.
"""

from __future__ import annotations

import logging
import math
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
    """How many threads a training run uses now.

    ``pace(tokens)`` is called before each forward pass with the tokens it will run.
    While ``chat_busy()`` is true the run takes ``yield_threads``. Otherwise it takes
    the faster of ``threads`` and half as many, as measured: the time from one pass to
    the next, per token, is averaged for each count, each is tried twice at the start
    and the slower one again every ``probe_every`` passes. On a quiet machine every
    core wins; on a machine busy with other work, threads that wait for a core spin at
    every barrier, and fewer threads can be several times faster.
    """

    threads: int
    yield_threads: int = 1
    chat_busy: Callable[[], bool] | None = None
    poll_seconds: float = 0.05
    adapt: bool = True
    probe_every: int = 40
    clock: Callable[[], float] = time.perf_counter
    yielded_seconds: float = 0.0
    seconds_per_token: dict[int, float] = field(default_factory=dict)
    _samples: dict[int, int] = field(default_factory=dict)
    _yielding: bool = False
    _since: float = 0.0
    _checked: float = -math.inf
    _passes: int = 0
    _open: tuple[float, int, int] | None = None  # the pass under way: start, tokens, threads

    def pace(self, tokens: int = 0) -> None:
        now = self.clock()
        self._close_pass(now)
        if self.chat_busy is not None and now - self._checked >= self.poll_seconds:
            self._checked = now
            yielding = self.chat_busy()
            if yielding != self._yielding:
                if self._yielding:
                    self.yielded_seconds += now - self._since
                self._yielding, self._since = yielding, now
        want = max(1, min(self.yield_threads, self.threads)) if self._yielding else self._choice()
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
        if tokens > 0 and not self._yielding:
            self._open = (now, tokens, want)

    def finish(self) -> None:
        self._open = None
        if self._yielding:
            self.yielded_seconds += self.clock() - self._since
            self._yielding = False

    def _candidates(self) -> list[int]:
        fewer = max(1, self.threads // 2)
        return [self.threads, fewer] if self.adapt and fewer < self.threads else [self.threads]

    def _choice(self) -> int:
        candidates = self._candidates()
        self._passes += 1
        for count in candidates:  # each is measured twice before any is preferred
            if self._samples.get(count, 0) < 2:
                return count
        best = min(candidates, key=lambda count: self.seconds_per_token[count])
        if len(candidates) > 1 and self._passes % self.probe_every == 0:  # the load changes: look again
            return next(count for count in candidates if count != best)
        return best

    def _close_pass(self, now: float) -> None:
        if self._open is None:
            return
        started, tokens, threads = self._open
        self._open = None
        measured = (now - started) / tokens
        previous = self.seconds_per_token.get(threads)
        self.seconds_per_token[threads] = measured if previous is None else 0.6 * previous + 0.4 * measured
        self._samples[threads] = self._samples.get(threads, 0) + 1
