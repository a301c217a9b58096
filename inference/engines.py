"""One engine per base model per process, loaded lazily on first use.

Loading blocks for seconds, so callers on the event loop reach ``engine_for``
through ``asyncio.to_thread``. Fine-tuned adapters are attached to their base's
engine, so every fine-tuned model shares one copy of the base weights.
"""

from __future__ import annotations

import gc
import logging
import threading

from django.conf import settings

from inference.registry import ModelSpec
from inference.runtime import (
    GONE,
    ServedModel,
    _freeze_long_lived_objects,
    _start,
)

logger = logging.getLogger(__name__)


_served: dict[str, ServedModel] = {}
_warming: set[str] = set()
_lock = threading.Lock()  # held while a model loads
_warming_lock = threading.Lock()  # only ever held for a set lookup


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
