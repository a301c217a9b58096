"""Jobs that start from a fine-tuned model, on the tiny model.

A LoRA job on a full fine-tuned model is served on that model's weights (checked
against peft on its folder, through the same path chat takes); a full job on a LoRA
model merges the adapter into a copy of its base first. A full model that others run
on cannot be deleted from under them.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import pytest
import torch
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client
from django.urls import reverse

from finetuning import runner, services
from finetuning.errors import FineTuningError
from finetuning.models import FineTunedModel, FineTuningJob
from inference import gateway, registry
from inference.engine.loading import load_model
from inference.engine.types import FinishEvent, SamplingParams

pytestmark = pytest.mark.django_db

NEW_TOKENS = 16


def trained(shout_file, base_model: str, method: str, **options) -> FineTunedModel:
    settings = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10, "validation_split": 0, "seed": 1}
    job = services.finetune_job_create(
        training_file=shout_file, base_model=base_model, method=method, enqueue=False, **{**settings, **options}
    )
    assert runner.finetune_job_execute(job_pk=job.pk) == "succeeded", job.error_message
    return FineTunedModel.objects.get(job=job)


async def served_reply(spec: registry.ModelSpec) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy completion ids) of "Shout cat" through the chat's engine path."""
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    stream = await gateway.open_local_stream(
        spec=spec, messages=[{"role": "user", "content": "Shout cat"}], params=params, request_id="r1", cache_key=None
    )
    events = [event async for event in stream.events()]
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.finish_reason == "length", finish
    return list(stream.fitted.prompt_ids), list(finish.completion_ids)


def peft_greedy(weights: str, adapter: str, prompt: list[int], tmp_path: Path) -> list[int]:
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(weights, cache_dir=tmp_path).model, adapter).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt) :].tolist()


def test_lora_on_a_full_model_is_served_on_that_models_weights(shout_file, tiny_model_dir, tmp_path, model_runtime) -> None:
    whole = trained(shout_file, "tiny-llama", "full", learning_rate_multiplier=50)
    adapter = trained(shout_file, whole.public_id, "lora", suffix="ontop")
    assert adapter.base_model == whole.public_id, "filed under the weights it was trained on"
    assert adapter.public_id.startswith("ft:tiny-llama:ontop:")
    spec = registry.model_get(adapter.public_id)
    assert spec is not None and (spec.base_source, spec.adapter_path) == (whole.adapter_path, adapter.adapter_path)
    prompt, served = asyncio.run(served_reply(spec))
    loaded = model_runtime.loaded_engines()
    assert list(loaded) == [whole.adapter_path] and loaded[whole.adapter_path].adapters == {adapter.public_id}
    assert served == peft_greedy(whole.adapter_path, adapter.adapter_path, prompt, tmp_path)
    on_the_root = peft_greedy(str(tiny_model_dir), adapter.adapter_path, prompt, tmp_path)
    assert served != on_the_root, "the root base's weights would have answered differently"


def test_a_lora_model_trained_further_stays_on_the_full_models_weights(shout_file) -> None:
    whole = trained(shout_file, "tiny-llama", "full", n_epochs=1)
    first = trained(shout_file, whole.public_id, "lora", n_epochs=1)
    second = trained(shout_file, first.public_id, "lora", n_epochs=1, suffix="more")
    assert second.base_model == whole.public_id
    spec = registry.model_get(second.public_id)
    assert spec is not None and spec.base_source == whole.adapter_path


def test_full_fine_tuning_from_a_lora_model_merges_its_adapter_first(shout_twice_file) -> None:
    adapter = trained(shout_twice_file, "tiny-llama", "lora", n_epochs=1)
    whole = trained(shout_twice_file, adapter.public_id, "full", n_epochs=1, validation_split=0.25, suffix="merged")
    assert (whole.method, whole.base_model) == ("full", "tiny-llama")
    assert (Path(whole.adapter_path) / "config.json").exists()
    job = FineTuningJob.objects.get(result=whole)
    messages = [event.message for event in job.events.all()]
    assert f"Merging the LoRA adapter of {adapter.public_id} into a copy of its base to train fully." in messages
    assert job.evaluation["examples"] == 2
    spec = registry.model_get(whole.public_id)
    assert spec is not None and (spec.base_source, spec.adapter_path) == (whole.adapter_path, None)


def register(model_id: str, base: str, method: str = "lora", **fields) -> FineTunedModel:
    return FineTunedModel.objects.create(
        public_id=model_id, label=model_id, base_model=base, adapter_path=f"/models/{model_id}", method=method, **fields
    )


def test_lora_models_on_a_hidden_full_model_stay_and_on_a_vanished_one_go() -> None:
    register("ft:tiny-llama:whole:aaaa1111", "tiny-llama", "full", hidden=True)
    register("ft:tiny-llama:ontop:bbbb2222", "ft:tiny-llama:whole:aaaa1111")
    register("ft:other:whole:cccc3333", "other", "full")
    register("ft:other:ontop:dddd4444", "ft:other:whole:cccc3333")
    choices = dict(registry.model_choices())
    assert "ft:tiny-llama:whole:aaaa1111" not in choices, "hidden"
    assert "ft:tiny-llama:ontop:bbbb2222" in choices
    spec = registry.model_get("ft:tiny-llama:ontop:bbbb2222")
    assert spec is not None and spec.base_source == "/models/ft:tiny-llama:whole:aaaa1111"
    assert "ft:other:ontop:dddd4444" not in choices, "its full model's base is not configured"


def test_a_full_model_others_run_on_cannot_be_deleted(admin_user) -> None:
    whole = register("ft:tiny-llama:whole:aaaa1111", "tiny-llama", "full")
    register("ft:tiny-llama:ontop:bbbb2222", whole.public_id)
    in_use = r"LoRA models run on its weights \(ft:tiny-llama:ontop:bbbb2222\); delete those first"
    with pytest.raises(FineTuningError, match=in_use) as refused:
        services.finetuned_model_delete(model=whole)
    assert refused.value.code == "model_in_use"
    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:finetuning_finetunedmodel_delete", args=[whole.pk])
    page = client.get(url).content.decode()
    assert "Fine-tuned model ft:tiny-llama:ontop:bbbb2222, which runs on the weights of" in page
    client.post(url, {"post": "yes"})
    assert FineTunedModel.objects.filter(pk=whole.pk).exists()
    changelist = reverse("admin:finetuning_finetunedmodel_changelist")
    action = {"action": "delete_selected", "_selected_action": [m.pk for m in FineTunedModel.objects.all()]}
    client.post(changelist, {**action, "post": "yes"})
    assert not FineTunedModel.objects.exists(), "chosen together, the adapter goes first"


def test_the_migration_refiles_lora_models_trained_on_a_full_model(shout_file) -> None:
    def job_on(base: str) -> FineTuningJob:
        return FineTuningJob.objects.create(base_model=base, training_file=shout_file)

    whole = register("ft:tiny-llama:whole:aaaa1111", "tiny-llama", "full")
    wrong = register("ft:tiny-llama:ontop:bbbb2222", "tiny-llama", job=job_on(whole.public_id))
    wrong_too = register("ft:tiny-llama:more:cccc3333", "tiny-llama", job=job_on(wrong.public_id))
    right = register("ft:tiny-llama:plain:dddd4444", "tiny-llama", job=job_on("tiny-llama"))
    migration = importlib.import_module("inference.migrations.0005_lora_models_on_full_weights")
    # The models as that migration saw them (they were in the inference app then), on today's tables.
    before = MigrationLoader(connection).project_state(("inference", "0004_engine_status")).apps
    migration.refile(before, None)
    for model in (wrong, wrong_too, right):
        model.refresh_from_db()
    assert (wrong.base_model, wrong_too.base_model, right.base_model) == (
        whole.public_id,
        whole.public_id,
        "tiny-llama",
    )
