"""New chats sample as their model advises: its generation_config.json, the bundled model's
declared settings, or the INFERENCE_DEFAULT_* ones; an operator's environment wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from conversations import services
from conversations.generation import generation_run
from finetuning.models import FineTunedModel
from inference import registry
from tests.fakes import ScriptedEngine


def model_folder(parent: Path, name: str, generation_config: object) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    text = generation_config if isinstance(generation_config, str) else json.dumps(generation_config)
    (folder / "generation_config.json").write_text(text)
    return folder


@pytest.fixture
def advising_model(settings, tmp_path: Path) -> Path:
    """The configured model's folder names temperature 0.3 and top_p 0.8."""
    config = {"bos_token_id": 1, "temperature": 0.3, "top_p": 0.8, "repetition_penalty": 1.1}
    settings.INFERENCE_MODEL = str(model_folder(tmp_path, "advising", config))
    settings.INFERENCE_SAMPLING_OVERRIDES = {}
    return Path(settings.INFERENCE_MODEL)


@pytest.mark.django_db
def test_a_new_chat_takes_its_models_generation_config(alice, advising_model: Path, settings) -> None:
    chat = services.conversation_create(owner=alice)
    assert chat.model_name == "advising"
    assert (chat.temperature, chat.top_p) == (0.3, 0.8)
    assert chat.frequency_penalty == settings.INFERENCE_DEFAULT_FREQUENCY_PENALTY, "repetition_penalty is another scale"


def test_the_bundled_model_gives_its_authors_sampling_whatever_its_cache_holds(settings, tmp_path: Path) -> None:
    settings.INFERENCE_SAMPLING_OVERRIDES = {}
    settings.INFERENCE_CACHE_DIR = tmp_path  # a cache converted before these settings existed
    model_folder(tmp_path, "smollm2-135m-instruct", {"bos_token_id": 1, "eos_token_id": 2})
    defaults = registry.sampling_defaults(model_id=registry.BUNDLED_MODEL_ID)
    assert defaults == registry.SamplingDefaults(temperature=0.2, top_p=0.9)


def test_a_model_that_names_no_sampling_gets_the_global_defaults(settings) -> None:
    settings.INFERENCE_SAMPLING_OVERRIDES = {}
    settings.INFERENCE_DEFAULT_TEMPERATURE, settings.INFERENCE_DEFAULT_TOP_P = 0.65, 0.95
    assert registry.sampling_defaults(model_id="tiny-llama") == registry.SamplingDefaults(0.65, 0.95)


def test_a_value_the_operator_set_in_the_environment_wins_over_the_models(advising_model: Path, settings) -> None:
    settings.INFERENCE_DEFAULT_TEMPERATURE = 1.1
    settings.INFERENCE_SAMPLING_OVERRIDES = {"temperature": 1.1}
    assert registry.sampling_defaults(model_id="advising") == registry.SamplingDefaults(1.1, 0.8)
    assert registry.sampling_defaults(model_id=registry.BUNDLED_MODEL_ID) == registry.SamplingDefaults(1.1, 0.9)


@pytest.mark.parametrize(
    "config",
    [{"temperature": 5, "top_p": 0}, {"temperature": "hot", "top_p": True}, "not json", "[0.3, 0.8]"],
)
def test_values_a_chat_could_not_use_are_left_out(settings, tmp_path: Path, config: object) -> None:
    settings.INFERENCE_SAMPLING_OVERRIDES = {}
    assert registry.generation_config_sampling(model_folder(tmp_path, "odd", config)) == {}
    assert registry.generation_config_sampling(tmp_path / "missing") == {}


@pytest.mark.django_db
def test_a_fine_tuned_model_keeps_its_bases_advice_unless_its_folder_has_its_own(settings, tmp_path: Path) -> None:
    settings.INFERENCE_SAMPLING_OVERRIDES = {}
    full = model_folder(tmp_path, "full", {"bos_token_id": 1})
    own = model_folder(tmp_path, "own", {"top_p": 0.5})
    for model_id, folder, method in [
        ("ft:a:full", full, "full"),
        ("ft:a:own", own, "full"),
        ("ft:a:lora", full, "lora"),
    ]:
        FineTunedModel.objects.create(
            public_id=model_id,
            label=model_id,
            base_model=registry.BUNDLED_MODEL_ID,
            adapter_path=str(folder),
            method=method,
        )
    assert registry.sampling_defaults(model_id="ft:a:full") == registry.SamplingDefaults(0.2, 0.9)
    assert registry.sampling_defaults(model_id="ft:a:own") == registry.SamplingDefaults(0.2, 0.5)
    assert registry.sampling_defaults(model_id="ft:a:lora") == registry.SamplingDefaults(0.2, 0.9)


@pytest.mark.django_db(transaction=True)
async def test_a_chats_top_p_reaches_the_engine(alice, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine(["Fine", "."], delay=0.01))
    chat = await database_sync_to_async(services.conversation_create)(owner=alice)
    chat.top_p, chat.temperature = 0.42, 0.9
    await chat.asave()
    turn = await database_sync_to_async(services.turn_start)(conversation=chat, text="How are you?")
    await generation_run(message_pk=turn.assistant_message.pk)
    assert engine.join()
    params = engine.requests[0].params
    assert (params.top_p, params.temperature) == (0.42, 0.9)
