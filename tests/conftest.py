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

    def fake_engine_for(spec):  # type: ignore[no-untyped-def]
        return engines.ServedModel(engine=state["engine"], loaded=loaded)  # type: ignore[arg-type]

    monkeypatch.setattr(engines, "engine_for", fake_engine_for)

    def use(engine: ScriptedEngine) -> ScriptedEngine:
        state["engine"] = engine
        return engine

    yield use
