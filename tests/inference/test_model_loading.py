"""The model loads once per process, lazily, from a safetensors cache or any local folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from inference import registry
from inference.engine.loading import ModelLoadError, resolve_source
from inference.runtime import ModelRuntime, ServedModel, start_engine
from tests.conversations.wsclient import open_socket

ROOT = Path(__file__).resolve().parents[2]


def test_django_start_up_loads_no_model_and_no_torch() -> None:
    code = (
        "import django, os, sys; os.environ['DJANGO_SETTINGS_MODULE']='chatsite.settings'; django.setup();"
        "import chatsite.asgi, chatsite.urls;"
        "from inference.runtime import process_runtime; assert not process_runtime().loaded_engines();"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_bundled_model_comes_from_its_safetensors_cache(settings) -> None:
    folder = Path(resolve_source("bundled", settings.INFERENCE_CACHE_DIR))
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    before = (folder / "model.safetensors").stat().st_mtime
    assert Path(resolve_source("bundled", settings.INFERENCE_CACHE_DIR)) == folder
    assert (folder / "model.safetensors").stat().st_mtime == before, "converted once, not on every start"


def test_a_folder_that_is_not_a_model_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a transformers model folder"):
        resolve_source(str(tmp_path), tmp_path)


@pytest.mark.django_db(transaction=True)
async def test_one_engine_serves_every_chat_of_a_model(alice, model_runtime) -> None:
    for _ in range(2):
        chat = await database_sync_to_async(services.conversation_create)(owner=alice)
        chat.max_tokens = 8
        await chat.asave()
        _, _, socket = await open_socket(alice, chat)
        await socket.send({"action": "send", "message": "hi"})
        await socket.until_finished(timeout=60)
        await socket.close()
    await generation_wait_idle()
    served = model_runtime.loaded_engines()
    assert list(served) == [registry.model_get("tiny-llama").base_source]


@pytest.mark.django_db(transaction=True)
async def test_a_model_that_cannot_load_marks_the_reply_failed(alice, settings, tmp_path) -> None:
    settings.INFERENCE_MODEL = str(tmp_path / "empty-folder")
    (tmp_path / "empty-folder").mkdir()
    chat = await database_sync_to_async(services.conversation_create)(owner=alice)
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "hi"})
    await socket.until_finished(timeout=30)
    await generation_wait_idle()
    reply = await Message.objects.aget(conversation=chat, role="assistant")
    assert reply.status == "error" and "failed" in reply.error
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_opening_chats_while_the_model_loads_never_stalls_the_server(alice, runtime_install) -> None:
    import asyncio
    import threading

    others_connected = threading.Event()
    waited_out: list[bool] = []

    def held_start(source: str) -> ServedModel:
        # A big model loading: it finishes only once the other sockets are open, so if
        # opening a socket waited for the load, nothing would ever connect in time.
        waited_out.append(not others_connected.wait(timeout=30))
        return start_engine(source)

    runtime = runtime_install(ModelRuntime(start=held_start))
    chats = [await database_sync_to_async(services.conversation_create)(owner=alice) for _ in range(3)]
    _, _, first = await open_socket(alice, chats[0])  # starts loading in the background
    for _ in range(100):
        if runtime.warming():
            break
        await asyncio.sleep(0.05)
    assert runtime.warming(), "opening a chat starts loading its model"
    others = [await open_socket(alice, chat) for chat in chats[1:]]
    assert all(connected for connected, _, _ in others), "sockets open while the model is still loading"
    assert not runtime.loaded_sources(), "the model is still loading"
    others_connected.set()
    for _, _, socket in others:
        await socket.close()
    await first.close()
    for _ in range(100):
        if runtime.loaded_engines():
            break
        await asyncio.sleep(0.1)
    assert list(runtime.loaded_engines()) == [registry.model_get("tiny-llama").base_source]
    assert waited_out == [False], "the load was held until the other sockets were open"
