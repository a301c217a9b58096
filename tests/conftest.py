"""Shared fixtures: personas (alice owns, bob is a stranger), the tiny model, engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.tiny_model import save_tiny_model

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL_DIR = ROOT / ".cache" / "test-models" / "tiny-llama"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return save_tiny_model(TINY_MODEL_DIR)


@pytest.fixture(autouse=True)
def _test_settings(settings, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.INFERENCE_MODEL = str(tiny_model_dir)
    settings.INFERENCE_CACHE_DIR = ROOT / ".cache" / "models"
    settings.INFERENCE_FLUSH_INTERVAL_MS = 50
    # Exact weights: tests compare outputs across batches, sockets and the API.
    settings.INFERENCE_WEIGHTS = "fp32"
    # No background thread writing status rows into the test database.
    settings.INFERENCE_STATUS_REPORTING = False
    # Nor a reaper on each test's event loop: tests call its tick (reap_once) themselves.
    settings.INFERENCE_REAPER = False
    # Engines mark that they write here; training in a test gives way only to its own test's.
    settings.INFERENCE_ACTIVITY_DIR = tmp_path / "activity"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "chatsite.layers.SingleProcessChannelLayer"}}
    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def alice(db) -> User:  # type: ignore[no-untyped-def]
    return User.objects.create_user("alice", password="correct horse battery")


@pytest.fixture
def bob(db) -> User:  # type: ignore[no-untyped-def]
    return User.objects.create_user("bob", password="another horse battery")


@pytest.fixture
def scripted_engine(monkeypatch) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """Swap the engine behind every model for a ScriptedEngine; yields a setter."""
    from inference import engines
    from inference.engine.loading import load_model
    from tests.fakes import ScriptedEngine

    state: dict[str, ScriptedEngine] = {"engine": ScriptedEngine(["Hello", ", ", "world", "."])}
    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=ROOT / ".cache" / "models")

    served: dict[int, engines.ServedModel] = {}

    def fake_engine_for(spec):  # type: ignore[no-untyped-def]
        # One ServedModel per engine, as engines.engine_for keeps one per model: it counts
        # the requests in flight.
        engine = state["engine"]
        if id(engine) not in served:
            served[id(engine)] = engines.ServedModel(engine=engine, loaded=loaded)  # type: ignore[arg-type]
        return served[id(engine)]

    monkeypatch.setattr(engines, "engine_for", fake_engine_for)

    def use(engine: ScriptedEngine) -> ScriptedEngine:
        state["engine"] = engine
        return engine

    yield use


@pytest.fixture
async def remote_worker(settings, scripted_engine):  # type: ignore[no-untyped-def]
    """``INFERENCE_MODE=remote`` inside the test: a task plays the generation worker,
    taking ``stream.open`` messages from the inference channel and serving each on this
    process's (scripted) engine, as ``manage.py runworker inference`` does."""
    import asyncio

    from channels.layers import get_channel_layer

    from inference import gateway

    settings.INFERENCE_MODE = "remote"
    layer = get_channel_layer()
    worker_channel = await layer.new_channel("worker.")
    served: set[asyncio.Task[None]] = set()

    async def work() -> None:
        while True:
            message = await layer.receive(settings.INFERENCE_CHANNEL)
            task = asyncio.create_task(gateway.serve_remote_stream(message, worker_channel=worker_channel, streams={}))
            served.add(task)

    worker = asyncio.create_task(work())
    yield worker_channel
    worker.cancel()
    for task in served:
        task.cancel()
