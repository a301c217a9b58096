"""The model runtime of a process: its served engines, how each is started, and what
they share.

Starting an engine blocks for seconds (weights load, threads start), so callers on the
event loop reach it through ``asyncio.to_thread``. torch is imported only when an
engine starts, never at Django start-up.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from inference.engine.loading import LoadedModel
    from inference.engine.scheduler import Engine

logger = logging.getLogger(__name__)


@dataclass
class ServedModel:
    engine: Engine
    loaded: LoadedModel
    adapters: set[str] = field(default_factory=set)
    # Requests submitted to this engine that have not finished (decoding or queued).
    in_flight: int = 0
    _in_flight_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request_admit(self, limit: int) -> bool:
        """Count one more request unless ``limit`` are in flight already."""
        with self._in_flight_lock:
            if self.in_flight >= limit:
                return False
            self.in_flight += 1
            return True

    def request_ended(self) -> None:
        with self._in_flight_lock:
            self.in_flight -= 1


# What a reply streaming on a released model ends with (after "The model failed while
# writing this reply: ").
GONE = "the model was deleted or hidden. Pick another in Settings and regenerate."


def inference_threads() -> int:
    """INFERENCE_THREADS, or every core but one: the event loop and the database work
    need a core, and torch's threads spinning against them made 16 chats 7x slower
    on two cores (docs/performance.md)."""
    return settings.INFERENCE_THREADS or max(1, (os.cpu_count() or 2) - 1)


def _start(base_source: str) -> ServedModel:
    if settings.INFERENCE_BACKEND == "synthetic":
        return _start_synthetic(base_source)
    # torch and the weights are imported on first use, never at Django start-up.
    from inference.engine.loading import load_model
    from inference.engine.scheduler import Engine
    from inference.engine.sharing import ChatActivity

    loaded = load_model(
        base_source, cache_dir=settings.INFERENCE_CACHE_DIR, threads=inference_threads(), device=settings.INFERENCE_DEVICE
    )
    # Training on this machine reads the marker and gives way while this engine writes.
    activity = ChatActivity(settings.INFERENCE_ACTIVITY_DIR, name=secrets.token_hex(4))
    engine = Engine(
        loaded,
        max_batch_size=settings.INFERENCE_MAX_BATCH_SIZE,
        weights=settings.INFERENCE_WEIGHTS,
        on_busy=activity.set_busy,
    )
    engine.start()
    logger.info("Loaded %s in %.1f s", loaded.name, loaded.load_seconds)
    return ServedModel(engine=engine, loaded=loaded)


def _start_synthetic(base_source: str) -> ServedModel:
    """Real tokenizer and chat template, filler text instead of a model (load tests)."""
    from inference.engine.loading import load_tokenizer
    from inference.engine.synthetic import SyntheticEngine

    loaded = load_tokenizer(base_source, cache_dir=settings.INFERENCE_CACHE_DIR)
    engine = SyntheticEngine(
        tokens_per_second=settings.INFERENCE_SYNTHETIC_TOKENS_PER_SECOND, text=settings.INFERENCE_SYNTHETIC_TEXT
    )
    engine.start()
    return ServedModel(engine=engine, loaded=loaded)  # type: ignore[arg-type]


def _freeze_long_lived_objects() -> None:
    """Keep Python's cyclic garbage collector from walking what a loaded engine brings.

    torch, transformers and a model leave ~400,000 objects that live as long as the
    process; every full collection walked them all, a 0.25 s pause of every stream on
    this machine (docs/performance.md). Frozen objects are still freed by reference
    counting when they die; only reference cycles among them would stay.
    """
    gc.collect()
    gc.freeze()
