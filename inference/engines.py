"""One engine per base model per process, loaded lazily on first use.

Loading blocks for seconds, so callers on the event loop reach ``engine_for``
through ``asyncio.to_thread``. Fine-tuned adapters are attached to their base's
engine, so every fine-tuned model shares one copy of the base weights.
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

from inference.registry import ModelSpec

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

_served: dict[str, ServedModel] = {}
_warming: set[str] = set()
_lock = threading.Lock()  # held while a model loads
_warming_lock = threading.Lock()  # only ever held for a set lookup


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


def engine_for(spec: ModelSpec) -> ServedModel:
    """The running engine for ``spec``'s base model, with its adapter attached."""
    with _lock:
        served = _served.get(spec.base_source)
        if served is None:
            served = _served[spec.base_source] = _start(spec.base_source)
            _freeze_long_lived_objects()
            from inference.status import start_reporter

            start_reporter()
        if spec.adapter_path and spec.id not in served.adapters:
            served.engine.add_adapter(spec.id, spec.adapter_path)
            served.adapters.add(spec.id)
        return served


def warm_up(spec: ModelSpec) -> None:
    """Start loading ``spec``'s engine in the background if this process has none yet.

    Called on the event loop when someone opens a conversation, so the model is ready
    by the time they have typed; still lazy, never at start-up. It never waits for
    ``_lock``, which a loading model holds for seconds.
    """
    with _warming_lock:
        if spec.base_source in _served or spec.base_source in _warming:
            return
        _warming.add(spec.base_source)

    def load() -> None:
        try:
            engine_for(spec)
        except Exception:  # the first real request reports the error to its user
            logger.exception("Warming up %s failed", spec.id)
        finally:
            with _warming_lock:
                _warming.discard(spec.base_source)

    threading.Thread(target=load, name=f"warm-{spec.id}", daemon=True).start()


def release_unused() -> list[str]:
    """Stop engines and drop adapters that no available model uses any more.

    A fine-tuned model deleted or hidden in one process leaves its weights loaded in
    every other process that served it; the status reporter of each process calls this
    every few seconds. Replies still streaming on what goes end with an error. Returns
    what was released ("source" for an engine, "source+model" for an adapter).
    """
    from inference.registry import available_models

    released: list[str] = []
    stopped: list[ServedModel] = []
    with _lock:
        if not _served or settings.INFERENCE_BACKEND == "synthetic":
            return released
        # Only what is loaded before the registry is read may go: a model registered and
        # attached in the meantime is missing from that read but very much wanted.
        loaded = {source: set(served.adapters) for source, served in _served.items()}
    wanted: dict[str, set[str]] = {}
    for spec in available_models():  # the database, outside the lock new requests need
        adapters = wanted.setdefault(spec.base_source, set())
        if spec.adapter_path:
            adapters.add(spec.id)
    with _lock:
        for source, adapter_ids in loaded.items():
            served = _served.get(source)
            if served is None:
                continue
            if source not in wanted:
                stopped.append(_served.pop(source))
                released.append(source)
                continue
            for model_id in sorted((adapter_ids & served.adapters) - wanted[source]):
                served.engine.remove_adapter(model_id)
                served.adapters.discard(model_id)
                released.append(f"{source}+{model_id}")
    for served in stopped:
        served.engine.shutdown(error=GONE)
    if stopped:  # its tensors were frozen with everything else at load (see above)
        gc.unfreeze()
        _freeze_long_lived_objects()
    if released:
        logger.info("Released %s", ", ".join(released))
    return released


def loaded_engines() -> dict[str, ServedModel]:
    with _lock:
        return dict(_served)


def shutdown_all() -> None:
    with _lock:
        for served in _served.values():
            served.engine.shutdown()
        _served.clear()
