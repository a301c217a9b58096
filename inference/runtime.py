"""The model runtime of a process: its served engines, their warm-up and locks, and one
housekeeping thread.

Each process (daphne, a generation worker, a script) has one ``ModelRuntime``, reached
through ``process_runtime()``. It loads one engine per base model on first use;
fine-tuned adapters are attached to their base's engine, so every fine-tuned model
shares one copy of the base weights. Loading blocks for seconds, so callers on the
event loop reach ``engine_for`` through ``asyncio.to_thread``; torch is imported only
when an engine starts, never at Django start-up.

Its one housekeeping thread is the process's timer: from the first engine on it lets go
of models deleted or hidden elsewhere and hands a ``RuntimeSnapshot`` to the status
reporter every ``INFERENCE_STATUS_INTERVAL_SECONDS``, and it runs the chores other
parts add (the reaper's ticks, which it hands to the event loop). Tests build a runtime
of their own (``ModelRuntime(start=...)``) and install it for the test's length.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from django.apps import apps
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

if TYPE_CHECKING:
    from inference.apps import InferenceConfig
    from inference.engine.loading import LoadedModel
    from inference.engine.scheduler import Engine
    from inference.registry import ModelSpec

logger = logging.getLogger(__name__)


class ProcessRole(StrEnum):
    WEB = "web"  # daphne: generates its own chats' replies in INFERENCE_MODE=local
    WORKER = "worker"  # manage.py runworker inference


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


def start_engine(base_source: str) -> ServedModel:
    """Load ``base_source`` and start its engine (the synthetic one with
    ``INFERENCE_BACKEND=synthetic``), then keep the collector from walking what it brought."""
    served = _start(base_source)
    _freeze_long_lived_objects()
    return served


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


@dataclass(frozen=True)
class ServedSnapshot:
    """One engine's load at one moment, from its ``stats()``."""

    source: str
    weights: str
    weights_reason: str
    active_streams: int
    queued_requests: int
    tokens_generated: int


@dataclass(frozen=True)
class RuntimeSnapshot:
    """What a process's runtime serves and how busy it is, for the status reporter."""

    role: ProcessRole
    started_at: datetime
    taken_at: float  # time.monotonic()
    served: tuple[ServedSnapshot, ...]

    @property
    def active_streams(self) -> int:
        return sum(model.active_streams for model in self.served)

    @property
    def queued_requests(self) -> int:
        return sum(model.queued_requests for model in self.served)

    @property
    def tokens_generated(self) -> int:
        return sum(model.tokens_generated for model in self.served)


def _served_snapshot(source: str, stats: dict[str, object]) -> ServedSnapshot:
    def number(name: str) -> int:
        value = stats.get(name, 0)
        return int(value) if isinstance(value, int | float) else 0

    return ServedSnapshot(
        source=source,
        weights=str(stats.get("weights", "")),
        weights_reason=str(stats.get("weights_reason", "")),
        active_streams=number("active_streams"),
        queued_requests=number("queued_requests"),
        tokens_generated=number("tokens_generated"),
    )


Reporter = Callable[[RuntimeSnapshot, "RuntimeSnapshot | None"], None]


@dataclass
class Chore:
    """Work the housekeeping thread repeats: ``run`` every ``every()`` seconds (read each
    time, so a changed setting applies). A ``run`` that returns False is dropped."""

    run: Callable[[], bool | None]
    every: Callable[[], float]
    due: float = 0.0


class ModelRuntime:
    """The engines one process serves, started on first use and released when their
    models go.

    ``start`` loads a base model and starts its engine (``start_engine``; tests pass a
    fake). ``report`` receives a snapshot and the one before it on every housekeeping
    tick (``status.report_once``); without it the thread only releases.

    The one housekeeping thread runs the process's periodic chores: releasing and
    reporting (from the first engine on, with ``INFERENCE_STATUS_REPORTING``), and any
    other part of the process adds (the reaper, chatsite/reaper.py).
    """

    def __init__(
        self,
        *,
        role: ProcessRole = ProcessRole.WEB,
        start: Callable[[str], ServedModel] = start_engine,
        report: Reporter | None = None,
    ) -> None:
        self.role = role
        self.started_at = timezone.now()
        self._start = start
        self._report = report
        self._served: dict[str, ServedModel] = {}
        self._warming: set[str] = set()
        self._lock = threading.Lock()  # held while a model loads
        self._warming_lock = threading.Lock()  # only ever held for a set lookup
        self._housekeeping: threading.Thread | None = None
        self._chores: dict[str, Chore] = {}
        self._chores_lock = threading.Lock()
        self._wake = threading.Event()  # a chore was added, or the runtime closed
        self._stopped = threading.Event()
        self._reported: RuntimeSnapshot | None = None
        # Tasks nobody awaits (holding a user's generation slots until their streams end,
        # inference/fair_use.py): referenced here so they run to the end.
        self._background: set[asyncio.Task[None]] = set()

    def background_keep(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` referenced until it is done."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def background_running(self) -> int:
        return len(self._background)

    def engine_for(self, spec: ModelSpec) -> ServedModel:
        """The running engine for ``spec``'s base model, with its adapter attached."""
        with self._lock:
            served = self._served.get(spec.base_source)
            if served is None:
                if self._stopped.is_set():  # a warm-up that began before close()
                    raise RuntimeError("This model runtime was closed.")
                served = self._served[spec.base_source] = self._start(spec.base_source)
                if settings.INFERENCE_STATUS_REPORTING:
                    self.chore_add("models", self._models_tick, every=_status_interval, at_once=True)
            if spec.adapter_path and spec.id not in served.adapters:
                served.engine.add_adapter(spec.id, spec.adapter_path)
                served.adapters.add(spec.id)
            return served

    def warm_up(self, spec: ModelSpec) -> None:
        """Start loading ``spec``'s engine in the background if this process has none yet.

        Called on the event loop when someone opens a conversation, so the model is ready
        by the time they have typed; still lazy, never at start-up. It never waits for
        the lock a loading model holds for seconds.
        """
        with self._warming_lock:
            if spec.base_source in self._served or spec.base_source in self._warming:
                return
            self._warming.add(spec.base_source)

        def load() -> None:
            try:
                self.engine_for(spec)
            except Exception:  # the first real request reports the error to its user
                logger.exception("Warming up %s failed", spec.id)
            finally:
                with self._warming_lock:
                    self._warming.discard(spec.base_source)

        threading.Thread(target=load, name=f"warm-{spec.id}", daemon=True).start()

    def warming(self) -> set[str]:
        """The base models loading in the background now (never waits for them)."""
        with self._warming_lock:
            return set(self._warming)

    def release_unused(self) -> list[str]:
        """Stop engines and drop adapters that no available model uses any more.

        A fine-tuned model deleted or hidden in one process leaves its weights loaded in
        every other process that served it; the housekeeping thread of each process calls
        this every few seconds. Replies still streaming on what goes end with an error.
        Returns what was released ("source" for an engine, "source+model" for an adapter).
        """
        from inference.registry import available_models

        released: list[str] = []
        stopped: list[ServedModel] = []
        with self._lock:
            if not self._served or settings.INFERENCE_BACKEND == "synthetic":
                return released
            # Only what is loaded before the registry is read may go: a model registered and
            # attached in the meantime is missing from that read but very much wanted.
            loaded = {source: set(served.adapters) for source, served in self._served.items()}
        wanted: dict[str, set[str]] = {}
        for spec in available_models():  # the database, outside the lock new requests need
            adapters = wanted.setdefault(spec.base_source, set())
            if spec.adapter_path:
                adapters.add(spec.id)
        with self._lock:
            for source, adapter_ids in loaded.items():
                served = self._served.get(source)
                if served is None:
                    continue
                if source not in wanted:
                    stopped.append(self._served.pop(source))
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

    def loaded_engines(self) -> dict[str, ServedModel]:
        """The engines loaded; waits while a model loads, as requests do."""
        with self._lock:
            return dict(self._served)

    def loaded_sources(self) -> list[str]:
        """The base models loaded now, never waiting for one that is loading."""
        return list(self._served.copy())  # one step under the GIL, so no lock

    def snapshot(self) -> RuntimeSnapshot:
        """Every served engine's load now; waits while a model loads, as requests do."""
        stats = [(source, served.engine.stats()) for source, served in self.loaded_engines().items()]
        return RuntimeSnapshot(
            role=self.role,
            started_at=self.started_at,
            taken_at=time.monotonic(),
            served=tuple(_served_snapshot(source, s) for source, s in stats),
        )

    def shutdown_all(self) -> None:
        with self._lock:
            for served in self._served.values():
                served.engine.shutdown()
            self._served.clear()

    def close(self, timeout: float = 30.0) -> None:
        """Stop every engine and the housekeeping thread, waiting (up to ``timeout``
        seconds) for the chore it runs now: after this returns, the runtime touches
        neither its engines nor the database."""
        self._stopped.set()
        self._wake.set()
        thread = self._housekeeping
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.shutdown_all()

    def chore_add(
        self, name: str, run: Callable[[], bool | None], *, every: Callable[[], float], at_once: bool = False
    ) -> None:
        """Run ``run`` on the housekeeping thread every ``every()`` seconds from now on,
        the first time after one interval (or ``at_once``); a name already added is left
        as it is."""
        if name in self._chores:  # the reaper asks on every connection: no lock for that
            return
        with self._chores_lock:
            if name in self._chores:
                return
            self._chores[name] = Chore(run=run, every=every, due=time.monotonic() + (0.0 if at_once else every()))
            if self._housekeeping is None:
                self._housekeeping = threading.Thread(target=self._housekeep_forever, name="housekeeping", daemon=True)
                self._housekeeping.start()
        self._wake.set()

    @property
    def housekeeping(self) -> threading.Thread | None:
        """The housekeeping thread, once a chore started it."""
        return self._housekeeping

    def chore_remove(self, name: str) -> None:
        with self._chores_lock:
            self._chores.pop(name, None)

    def housekeep_once(self, previous: RuntimeSnapshot | None = None) -> RuntimeSnapshot | None:
        """1. Release what no available model uses. 2. Report a snapshot. Each step's
        failure is logged and the other still runs; returns the snapshot reported."""
        try:
            self.release_unused()
        except Exception:  # the registry is in the database too; the report still goes out
            logger.warning("Could not check for deleted models", exc_info=True)
        if self._report is None:
            return None
        try:
            snapshot = self.snapshot()
            self._report(snapshot, previous)
            return snapshot
        except Exception:  # the database may be briefly away; try again next time
            logger.warning("Could not report engine status", exc_info=True)
            return previous
        finally:
            close_old_connections()

    def _models_tick(self) -> None:
        self._reported = self.housekeep_once(self._reported)

    def _housekeep_forever(self) -> None:
        while not self._stopped.is_set():
            with self._chores_lock:
                due = [(name, chore) for name, chore in self._chores.items() if chore.due <= time.monotonic()]
            for name, chore in due:
                self._run_chore(name, chore)
            with self._chores_lock:
                next_due = min((chore.due for chore in self._chores.values()), default=math.inf)
            self._wake.wait(max(0.0, next_due - time.monotonic()) if next_due < math.inf else None)
            self._wake.clear()

    def _run_chore(self, name: str, chore: Chore) -> None:
        try:
            keep = chore.run() is not False
        except Exception:  # the next tick tries again
            logger.warning("Housekeeping chore %s failed", name, exc_info=True)
            keep = True
        chore.due = time.monotonic() + chore.every()
        if not keep:
            self.chore_remove(name)


def _status_interval() -> float:
    return float(settings.INFERENCE_STATUS_INTERVAL_SECONDS)


def _inference_app() -> InferenceConfig:
    # Looked up, not imported: the app's module imports this one to make the runtime.
    return cast("InferenceConfig", apps.get_app_config("inference"))


def process_runtime() -> ModelRuntime:
    """This process's runtime (made when the inference app is ready)."""
    return _inference_app().runtime


def process_runtime_install(runtime: ModelRuntime) -> ModelRuntime:
    """Make ``runtime`` this process's from now on, and return the one it replaces.

    A generation worker installs one with its role before it serves anything; a test
    installs one it built, and puts the previous one back after.
    """
    config = _inference_app()
    previous, config.runtime = config.runtime, runtime
    return previous
