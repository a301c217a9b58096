"""LoRA adapters: served from the shared base weights, mixed in one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.engine.lora import AdapterError
from inference.engine.scheduler import generate_text
from inference.engine.types import GenerationRequest, SamplingParams

from .conftest import ENDLESS, submit

GREEDY = SamplingParams(max_new_tokens=16, temperature=0)
PROMPTS = ["Hello adapter", "Another prompt, a bit longer than the first one", "z"]


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, tiny_model_dir: Path) -> dict[str, Path]:
    """Two random LoRA adapters on the tiny model, saved the way peft saves them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = {}
    targets = {"a": ["q_proj", "v_proj"], "b": ["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"]}
    for seed, (name, modules) in enumerate(targets.items()):
        torch.manual_seed(100 + seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=modules, init_lora_weights=False)
        model = get_peft_model(base, config)
        with torch.no_grad():  # make the adapters matter for greedy decoding
            for param_name, param in model.named_parameters():
                if "lora_" in param_name:
                    param.mul_(3.0)
        folder = tmp_path_factory.mktemp("adapters") / name
        model.save_pretrained(folder)
        folders[name] = folder
    return folders


def peft_greedy(tiny_model_dir: Path, adapter: Path | None, prompt: list[int]) -> list[int]:
    """The reference: peft's own model with that adapter alone, transformers generate."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    output = model.generate(
        input_ids=torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    return output[0, len(prompt) :].tolist()


def test_adapters_in_one_batch_give_each_request_its_own_adapters_output(make_engine, adapter_dirs, tiny_model_dir):
    engine = make_engine()
    for name, folder in adapter_dirs.items():
        engine.add_adapter(name, folder)
    prompts = [list(engine.tokenizer.encode(p)) for p in PROMPTS]
    jobs = [(prompt, adapter) for prompt in prompts for adapter in (None, "a", "b")]
    collectors = [
        submit(engine, GenerationRequest(f"r{i}", prompt, GREEDY, adapter=adapter))
        for i, (prompt, adapter) in enumerate(jobs)
    ]
    outputs = {}
    for (prompt, adapter), collector in zip(jobs, collectors, strict=True):
        ids = list(collector.wait().completion_ids)
        reference = peft_greedy(tiny_model_dir, adapter_dirs.get(adapter), prompt)
        assert ids == reference[: len(ids)], adapter
        outputs.setdefault(tuple(prompt), set()).add(tuple(ids))
    assert all(len(variants) == 3 for variants in outputs.values()), "adapters should change the output"


def test_int8_base_weights_serve_adapters_too(make_engine, adapter_dirs):
    engine = make_engine(weights="int8")
    engine.add_adapter("a", adapter_dirs["a"])
    prompt = list(engine.tokenizer.encode(PROMPTS[0]))
    fixed = SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True)
    _, base = generate_text(engine, GenerationRequest("base", prompt, fixed))
    _, adapted = generate_text(engine, GenerationRequest("adapted", prompt, fixed, adapter="a"))
    assert base.finish_reason == adapted.finish_reason == "length"
    assert base.completion_ids != adapted.completion_ids


def test_removing_an_adapter_ends_its_requests_and_keeps_the_others(make_engine, adapter_dirs, long_context_dir):
    engine = make_engine(model_dir=long_context_dir)
    engine.add_adapter("a", adapter_dirs["a"])
    prompt = list(engine.tokenizer.encode(PROMPTS[0]))
    adapted = submit(engine, GenerationRequest("ad", prompt, ENDLESS, adapter="a"))
    fixed = SamplingParams(max_new_tokens=60, temperature=0, ignore_eos=True)
    base = submit(engine, GenerationRequest("base", prompt, fixed))
    assert adapted.started.wait(30), "the adapted request never started"
    engine.remove_adapter("a")
    assert adapted.wait().finish_reason == "error"
    assert base.wait().finish_reason == "length"
    assert engine.stats()["adapters"] == []


def test_a_folder_that_is_not_an_adapter_is_refused(make_engine, tmp_path):
    engine = make_engine()
    with pytest.raises(AdapterError):
        engine.add_adapter("nothing", tmp_path)
