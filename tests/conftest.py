"""Shared fixtures: personas (alice owns, bob is a stranger), the tiny model, engines."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User

from tests.helpers import CORES_PER_TEST_PROCESS, TEST_PROCESSES
from tests.tiny_model import save_tiny_model

if TYPE_CHECKING:
    from conversations.models import Conversation
    from inference.runtime import ModelRuntime

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL_DIR = ROOT / ".cache" / "test-models" / "tiny-llama"


def pytest_configure(config: pytest.Config) -> None:
    """Side by side with other test processes, torch here and in the servers tests start
    uses this process's share of the cores (read when torch is first imported)."""
    if TEST_PROCESSES > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(CORES_PER_TEST_PROCESS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, each group in its usual order: with the suite spread over
    the cores (`make test` runs ``pytest -n``), a minutes-long test that started last
    would run on alone while every other core had finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return save_tiny_model(TINY_MODEL_DIR)


@pytest.fixture(autouse=True)
def _test_settings(settings, tiny_model_dir: Path, tmp_path: Path) -> None:
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
    settings.FINETUNE_OUTPUT_DIR = tmp_path / "finetuned"


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", password="correct horse battery")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob", password="another horse battery")


@pytest.fixture
def chat(alice: User) -> Conversation:
    """A new conversation of alice's, with the default settings."""
    from conversations import services

    return services.conversation_create(owner=alice)


@pytest.fixture
def runtime_install() -> Iterator[Callable[[ModelRuntime], ModelRuntime]]:
    """Makes runtimes the test builds this process's, one after another; after the test
    each is closed and the process's own is back."""
    from inference.runtime import process_runtime, process_runtime_install

    original = process_runtime()
    built: list[ModelRuntime] = []

    def install(runtime: ModelRuntime) -> ModelRuntime:
        built.append(runtime)
        process_runtime_install(runtime)
        return runtime

    yield install
    process_runtime_install(original)
    for runtime in built:
        runtime.close()


@pytest.fixture(autouse=True)
def runtime_per_test(runtime_install) -> None:
    """Every test gets a model runtime of its own, closed after it: no engine, warm-up or
    housekeeping thread (which reads the registry from the database) outlives the test
    that started it and runs while the next test's database is being flushed."""
    from inference.runtime import ModelRuntime

    runtime_install(ModelRuntime())


@pytest.fixture
def model_runtime(runtime_install) -> ModelRuntime:
    """A runtime of the test's own with nothing loaded yet: its models load as it needs them."""
    from inference.runtime import ModelRuntime

    return runtime_install(ModelRuntime())


@pytest.fixture
def scripted_engine(runtime_install) -> Iterator[object]:
    """Serve every model from a ScriptedEngine; yields a setter for the next one."""
    from inference.engine.loading import load_model
    from inference.runtime import ModelRuntime, ServedModel
    from tests.fakes import ScriptedEngine

    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=ROOT / ".cache" / "models")
    # One ServedModel per engine, as a runtime keeps one per model: it counts the
    # requests in flight.
    served: dict[int, ServedModel] = {}

    def use(engine: ScriptedEngine) -> ScriptedEngine:
        def start(source: str) -> ServedModel:
            return served.setdefault(id(engine), ServedModel(engine=engine, loaded=loaded))

        runtime_install(ModelRuntime(start=start))
        return engine

    use(ScriptedEngine(["Hello", ", ", "world", "."]))
    yield use


@pytest.fixture
async def remote_worker(settings, scripted_engine):
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
