"""A deleted or hidden fine-tuned model lets go of its weights in every process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from finetuning import services
from finetuning.models import FineTunedModel
from inference import registry
from inference.engine.types import GenerationRequest, SamplingParams
from inference.runtime import GONE, ServedModel
from tests.engine.conftest import submit
from tests.finetuning.test_chat_with_fine_tuned import register, tiny_adapter

pytestmark = pytest.mark.django_db

WHOLE = "ft:tiny-llama:whole:aaaa1111"
LOUD = "ft:tiny-llama:loud:bbbb2222"


@pytest.fixture
def served_models(tiny_model_dir, tmp_path, model_runtime) -> Iterator[dict[str, ServedModel]]:
    """The tiny base with a LoRA model attached, and a full fine-tuned model, all loaded."""
    shutil.copytree(tiny_model_dir, tmp_path / "whole")
    register(WHOLE, tmp_path / "whole", "Whole tiny", method="full")
    register(LOUD, tiny_adapter(tiny_model_dir, tmp_path / "adapter"), "Loud tiny")
    served = {}
    for model_id in (WHOLE, LOUD):
        spec = registry.model_get(model_id)
        assert spec is not None
        served[model_id] = model_runtime.engine_for(spec)
    assert set(model_runtime.loaded_engines()) == {str(tmp_path / "whole"), str(tiny_model_dir)}
    yield served


def test_deleting_a_full_model_stops_its_engine_in_this_process(served_models, tiny_model_dir, model_runtime) -> None:
    writing = submit(
        served_models[WHOLE].engine, GenerationRequest("r1", [40, 41], SamplingParams(10_000, 0.0, ignore_eos=True))
    )
    services.finetuned_model_delete(model=FineTunedModel.objects.get(public_id=WHOLE))
    finish = writing.wait()
    assert (finish.finish_reason, finish.error) == ("error", GONE), "the reply says why it ended"
    assert list(model_runtime.loaded_engines()) == [str(tiny_model_dir)], "the base keeps serving"
    thread = served_models[WHOLE].engine._thread
    assert thread is not None and not thread.is_alive(), "the full model's engine thread ended"
    services.finetuned_model_delete(model=FineTunedModel.objects.get(public_id=LOUD))
    assert model_runtime.loaded_engines()[str(tiny_model_dir)].adapters == set()
    assert LOUD not in served_models[LOUD].engine.adapters.names()


def test_a_process_lets_go_of_models_deleted_or_hidden_elsewhere(served_models, tiny_model_dir, tmp_path, model_runtime) -> None:
    assert model_runtime.release_unused() == [], "nothing changed yet"
    # What another process (the admin's web process) does: only the rows change here.
    FineTunedModel.objects.filter(public_id=WHOLE).delete()
    FineTunedModel.objects.filter(public_id=LOUD).update(hidden=True)
    released = model_runtime.release_unused()
    assert sorted(released) == sorted([str(tmp_path / "whole"), f"{tiny_model_dir}+{LOUD}"])
    assert list(model_runtime.loaded_engines()) == [str(tiny_model_dir)]
    assert model_runtime.loaded_engines()[str(tiny_model_dir)].adapters == set()
    thread = served_models[WHOLE].engine._thread
    assert thread is not None and not thread.is_alive()
    FineTunedModel.objects.filter(public_id=LOUD).update(hidden=False)
    spec = registry.model_get(LOUD)
    assert spec is not None and LOUD in model_runtime.engine_for(spec).adapters, "shown again, it is attached again"


def test_a_model_attached_while_the_registry_is_read_is_kept(served_models, tiny_model_dir, monkeypatch, model_runtime) -> None:
    fresh = "ft:tiny-llama:fresh:cccc3333"
    register(fresh, FineTunedModel.objects.get(public_id=LOUD).adapter_path, "Fresh tiny")
    real = registry.available_models

    def read_while_a_request_attaches_it() -> list[registry.ModelSpec]:
        specs = real()
        model_runtime.engine_for(next(spec for spec in specs if spec.id == fresh))  # a request for it, meanwhile
        return [spec for spec in specs if spec.id != fresh]  # as read just before it was saved

    monkeypatch.setattr(registry, "available_models", read_while_a_request_attaches_it)
    assert model_runtime.release_unused() == []
    assert fresh in model_runtime.loaded_engines()[str(tiny_model_dir)].adapters
