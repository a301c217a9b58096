"""Shared fixtures for the engine tests: engines that clean up, on the tiny random model
(``tiny_model_dir``, from tests/conftest.py) or its long-context twin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.engine.loading import load_model
from inference.engine.scheduler import Engine
from inference.engine.types import EngineEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent
from tests.tiny_model import save_tiny_model

# A request that cannot end on its own before a test cancels, removes or shuts it down:
# the random tiny model may draw its end token at any point, so it is ignored.
ENDLESS = SamplingParams(max_new_tokens=1_000_000, temperature=0, ignore_eos=True)

BUNDLED_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"


@pytest.fixture(scope="session")
def long_context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (same weights) with room for a request that must still be running
    when a test acts on it: pair it with ``ENDLESS`` so nothing ends the request first."""
    return save_tiny_model(tmp_path_factory.mktemp("long") / "model", context_length=1_000_000)


@pytest.fixture
def make_engine(tiny_model_dir: Path) -> Iterator:
    """Build started engines on a fresh copy of the tiny model (fp32 unless told)."""
    engines: list[Engine] = []

    def build(model_dir: Path = tiny_model_dir, **options) -> Engine:
        options.setdefault("weights", "fp32")
        engine = Engine(load_model(str(model_dir), cache_dir=model_dir.parent), **options)
        engine.start()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.shutdown()


class Collector:
    """A callback that records every event of one request."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.started = threading.Event()  # the first event arrived
        self.done = threading.Event()

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)
        self.started.set()
        if isinstance(event, FinishEvent):
            self.done.set()

    def wait(self, timeout: float = 30) -> FinishEvent:
        assert self.done.wait(timeout), "the request never finished"
        return self.finish

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TokenEvent))

    @property
    def finish(self) -> FinishEvent:
        finishes = [e for e in self.events if isinstance(e, FinishEvent)]
        assert len(finishes) == 1, f"expected one FinishEvent, got {len(finishes)}"
        return finishes[0]


def submit(engine: Engine, request: GenerationRequest) -> Collector:
    collector = Collector()
    engine.submit(request, collector)
    return collector


def prompt_ids(engine: Engine, text: str) -> list[int]:
    return list(engine.tokenizer.encode(text))
