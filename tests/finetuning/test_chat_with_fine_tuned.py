"""A fine-tuned model is in the chat's model picker at once, and chatting with it streams."""

from __future__ import annotations

from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from conversations import services as chat_services
from conversations.generation import generation_wait_idle
from conversations.models import Message
from finetuning.models import FineTunedModel
from inference import registry
from inference.engine.datasets import Example
from inference.engine.datasets import Message as ChatMessage
from inference.engine.loading import load_model
from inference.engine.training import TrainingConfig, train
from tests.conversations.wsclient import open_socket


def tiny_adapter(model_dir: Path, output: Path) -> Path:
    """Train a tiny LoRA adapter for a couple of steps: real weights the engine can attach."""
    examples = [
        Example((ChatMessage("user", f"Shout {w}"), ChatMessage("assistant", w.upper())), i)
        for i, w in enumerate(["cat", "dog", "owl"])
    ]
    base = load_model(str(model_dir), cache_dir=output.parent)
    train(TrainingConfig(base_model=str(model_dir), epochs=1, batch_size=3), examples, output_dir=output, base=base)
    return output


def register(model_id: str, adapter: Path, label: str, **fields) -> FineTunedModel:
    return FineTunedModel.objects.create(
        public_id=model_id, label=label, base_model="tiny-llama", adapter_path=str(adapter), **fields
    )


@pytest.mark.django_db
def test_a_fine_tuned_model_is_in_the_picker_at_once_and_hidden_ones_are_not(alice, tmp_path) -> None:
    chat = chat_services.conversation_create(owner=alice)
    register("ft:tiny-llama:loud:aaaa1111", tmp_path, "Loud tiny")
    register("ft:tiny-llama:quiet:bbbb2222", tmp_path, "Quiet tiny", hidden=True)
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert '<option value="ft:tiny-llama:loud:aaaa1111">Loud tiny</option>' in page
    assert "Quiet tiny" not in page
    assert registry.model_get("ft:tiny-llama:quiet:bbbb2222") is None
    response = client.post(
        reverse("conversation_settings", args=[chat.public_id]),
        {"model_name": "ft:tiny-llama:loud:aaaa1111", "system_prompt": "", "temperature": "0", "max_tokens": "16"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    chat.refresh_from_db()
    assert chat.model_name == "ft:tiny-llama:loud:aaaa1111"


@pytest.mark.django_db
def test_a_model_whose_base_is_gone_leaves_the_picker(tmp_path) -> None:
    FineTunedModel.objects.create(
        public_id="ft:other:x:cccc3333", label="Orphan", base_model="other", adapter_path=str(tmp_path)
    )
    assert "ft:other:x:cccc3333" not in dict(registry.model_choices())


@pytest.mark.django_db(transaction=True)
async def test_chatting_with_fine_tuned_models_streams_on_one_copy_of_the_base(alice, tiny_model_dir, tmp_path, model_runtime) -> None:
    adapter = await database_sync_to_async(tiny_adapter)(tiny_model_dir, tmp_path / "adapter")
    for index, model_id in enumerate(["ft:tiny-llama:one:aaaa1111", "ft:tiny-llama:two:bbbb2222"]):
        await database_sync_to_async(register)(model_id, adapter, f"Tiny {index}")
        chat = await database_sync_to_async(chat_services.conversation_create)(owner=alice, model_name=model_id)
        chat.max_tokens, chat.temperature = 12, 0.0  # greedy: the same reply every run
        await chat.asave()
        _, _, socket = await open_socket(alice, chat)
        await socket.send({"action": "send", "message": "Shout cat"})
        message_id = await socket.until_finished(timeout=60)
        await generation_wait_idle()
        reply = await Message.objects.aget(public_id=message_id)
        assert socket.finished[message_id] == "complete" and reply.model_name == model_id
        assert socket.texts[message_id] == reply.content and reply.completion_tokens
        await socket.close()
    served = model_runtime.loaded_engines()
    assert list(served) == [str(tiny_model_dir)], "both fine-tuned models run on the one tiny base engine"
    assert served[str(tiny_model_dir)].adapters == {"ft:tiny-llama:one:aaaa1111", "ft:tiny-llama:two:bbbb2222"}
