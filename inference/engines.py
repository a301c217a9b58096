"""The calls other apps make on this process's model runtime (inference/runtime.py).

Kept as plain functions for the chat socket's warm-up and for scripts; everything
else, and anything new, asks ``process_runtime()`` itself.
"""

from __future__ import annotations

from inference.registry import ModelSpec
from inference.runtime import ServedModel, process_runtime


def engine_for(spec: ModelSpec) -> ServedModel:
    """The running engine for ``spec``'s base model, with its adapter attached."""
    return process_runtime().engine_for(spec)


def warm_up(spec: ModelSpec) -> None:
    """Start loading ``spec``'s engine in the background if this process has none yet."""
    process_runtime().warm_up(spec)


def shutdown_all() -> None:
    process_runtime().shutdown_all()
