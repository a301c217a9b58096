"""The training loop, on the tiny random model: what is trained, packing, saving, cancel.

Run alone with ``.venv/bin/python -m pytest tests/engine/test_training.py -q``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from inference.engine.datasets import Example, Message, parse_dataset, resolve_hyperparameters
from inference.engine.evaluation import adapter_applied, evaluate
from inference.engine.loading import LoadedModel, load_model
from inference.engine.training import (
    BASE_LEARNING_RATES,
    IGNORE_INDEX,
    METADATA_FILE,
    TrainingCancelled,
    TrainingConfig,
    completion_logits,
    encode_example,
    make_batches,
    pack_rows,
    score_examples,
    train,
)
from tests.tiny_model import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
WORDS = ["cat", "dog", "bird", "fish", "frog", "mole"]
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pair(prompt: str, reply: str, line: int = 1) -> Example:
    return Example((Message("user", prompt), Message("assistant", reply)), line)


def shout_examples(repeat: int = 2) -> list[Example]:
    return [pair(f"Shout {w}", w.upper(), i) for i, w in enumerate(WORDS * repeat, start=1)]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny(tiny_folder: Path, tmp_path: Path) -> LoadedModel:
    return load_model(str(tiny_folder), cache_dir=tmp_path)


def config(tiny_folder: Path, **settings: object) -> TrainingConfig:
    defaults: dict[str, object] = {
        "base_model": str(tiny_folder),
        "epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 10.0,
    }
    return TrainingConfig(**{**defaults, **settings})


def logits_of(model: torch.nn.Module, tokenizer: object, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_the_loss_covers_only_the_assistant_replies(tiny: LoadedModel) -> None:
    example = Example(
        (
            Message("system", "Be loud."),
            Message("user", "Shout cat"),
            Message("assistant", "CAT"),
            Message("user", "Again"),
            Message("assistant", "CAT!"),
        )
    )
    encoded = encode_example(tiny.tokenizer, example)
    text = tiny.tokenizer.decode(list(encoded.input_ids))
    assert text == tiny.tokenizer.apply_chat_template(example.chat(), tokenize=False).removesuffix("\n")
    trained = [t if t != IGNORE_INDEX else None for t in encoded.labels]
    spans = "".join(tiny.tokenizer.decode([t]) if t is not None else "\0" for t in trained)
    assert [s for s in spans.split("\0") if s] == ["CAT<|im_end|>", "CAT!<|im_end|>"]
    assert encoded.target_count == len("CAT") + 1 + len("CAT!") + 1


def test_packing_fills_rows_longest_first() -> None:
    assert pack_rows([5, 3, 8, 2, 9], row_tokens=10) == [[4], [2, 3], [0, 1]]
    assert pack_rows([12, 4], row_tokens=10) == [[0], [1]]


def test_packed_examples_do_not_see_each_other(tiny: LoadedModel) -> None:
    longer, shorter = (encode_example(tiny.tokenizer, pair(*p)) for p in [("Shout bird", "BIRD"), ("Shout cat", "CAT")])
    packed = make_batches([shorter, longer], pad_id=0, pack=True, row_tokens=512, forward_tokens=4096)
    assert len(packed) == 1 and packed[0].input_ids.shape[0] == 1  # one row, longest first
    alone = [make_batches([e], pad_id=0, pack=True, row_tokens=512, forward_tokens=4096)[0] for e in (longer, shorter)]
    with torch.no_grad():
        together = completion_logits(tiny.model, packed[0])
        separately = torch.cat([completion_logits(tiny.model, batch) for batch in alone])
    assert together.shape == separately.shape
    assert torch.allclose(together, separately, atol=1e-5)


def test_packing_and_padding_give_the_same_loss(tiny: LoadedModel) -> None:
    encoded = [encode_example(tiny.tokenizer, e) for e in shout_examples(1)]
    losses = []
    for pack in (True, False):
        batches = make_batches(encoded, pad_id=0, pack=pack, row_tokens=512, forward_tokens=4096)
        with torch.no_grad():
            logits = torch.cat([completion_logits(tiny.model, b) for b in batches])
        targets = torch.cat([b.targets for b in batches])
        losses.append(torch.nn.functional.cross_entropy(logits, targets).item())
        assert len(targets) == sum(e.target_count for e in encoded)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_forward_passes_stay_under_the_token_budget(tiny: LoadedModel) -> None:
    encoded = [encode_example(tiny.tokenizer, e) for e in shout_examples(2)]
    batches = make_batches(encoded, pad_id=0, pack=True, row_tokens=64, forward_tokens=128)
    assert len(batches) > 1
    assert all(b.input_ids.numel() <= 128 for b in batches)
    assert sum(b.tokens for b in batches) == sum(len(e.input_ids) for e in encoded)


@pytest.mark.parametrize(
    ("overrides", "ratio"),
    [
        # LoRA barely moves a random tiny model; a small fall is the signal here.
        ({"method": "lora"}, 0.95),
        ({"method": "full", "learning_rate_multiplier": 20.0}, 0.9),
    ],
    ids=["lora", "full"],
)
def test_the_loss_falls_on_a_repeated_dataset(
    tiny_folder: Path, tiny: LoadedModel, tmp_path: Path, overrides: dict, ratio: float
) -> None:
    epochs: list[tuple[int, float, float | None, float | None]] = []
    result = train(
        config(tiny_folder, epochs=6, **overrides),
        shout_examples(),
        output_dir=tmp_path / "out",
        base=tiny,
        validation=shout_examples(1)[:3],
        on_epoch_end=lambda *metrics: epochs.append(metrics),
    )
    assert [e[0] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1][1] < epochs[0][1] * ratio
    assert epochs[-1][2] is not None and epochs[-1][2] < epochs[0][2]
    assert 0.0 <= epochs[-1][3] <= 1.0
    assert result.final_train_loss == epochs[-1][1]
    assert result.steps == 6 * 3 and len(result.step_losses) == 18


def test_it_reports_progress_every_step(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    calls: list[tuple] = []
    result = train(
        config(tiny_folder, epochs=2, batch_size=5),
        shout_examples(),
        output_dir=tmp_path / "out",
        base=tiny,
        on_progress=lambda *args: calls.append(args),
    )
    assert [c[:3] for c in calls] == [(1, 6, 1), (2, 6, 1), (3, 6, 1), (4, 6, 2), (5, 6, 2), (6, 6, 2)]
    *_, loss, lr, tokens_seen, elapsed, eta = calls[-1]
    assert loss > 0 and lr > 0 and elapsed > 0 and eta == 0
    assert tokens_seen == result.tokens_seen == 2 * sum(
        len(encode_example(tiny.tokenizer, e).input_ids) for e in shout_examples()
    )
    assert result.examples_seen == 24 and result.examples_per_second > 0


def test_the_same_seed_trains_the_same_way(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    runs = [
        train(config(tiny_folder, seed=3), shout_examples(), output_dir=tmp_path / str(i), base=tiny).step_losses
        for i in range(2)
    ]
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)


def test_cancel_stops_cleanly_and_writes_nothing(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    steps: list[int] = []
    before = logits_of(tiny.model, tiny.tokenizer, "Shout cat")
    with pytest.raises(TrainingCancelled) as cancelled:
        train(
            config(tiny_folder, epochs=5),
            shout_examples(),
            output_dir=tmp_path / "out",
            base=tiny,
            on_progress=lambda step, *rest: steps.append(step),
            should_cancel=lambda: len(steps) >= 2,
        )
    assert cancelled.value.step == 2
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []
    # The lent base is back as it was: no LoRA layers, same outputs.
    assert not any("lora" in name for name, _ in tiny.model.named_modules())
    assert torch.equal(logits_of(tiny.model, tiny.tokenizer, "Shout cat"), before)


def test_the_lora_folder_loads_with_peft_and_changes_outputs(
    tiny_folder: Path, tiny: LoadedModel, tmp_path: Path
) -> None:
    from peft import PeftModel

    before = logits_of(tiny.model, tiny.tokenizer, "Shout cat")
    result = train(config(tiny_folder), shout_examples(), output_dir=tmp_path / "adapter", base=tiny)
    assert {"adapter_config.json", "adapter_model.safetensors", METADATA_FILE} <= {
        p.name for p in result.output_dir.iterdir()
    }
    adapter_config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and set(adapter_config["target_modules"]) == set(ALL_LINEAR)
    metadata = json.loads((result.output_dir / METADATA_FILE).read_text())
    assert metadata["base_model"] == str(tiny_folder) and metadata["method"] == "lora"
    assert metadata["hyperparameters"]["epochs"] == 2 and metadata["training_examples"] == 12
    # The base is untouched; base + adapter answers differently.
    assert torch.equal(logits_of(tiny.model, tiny.tokenizer, "Shout cat"), before)
    fresh = load_model(str(tiny_folder), cache_dir=tmp_path)
    tuned = PeftModel.from_pretrained(fresh.model, str(result.output_dir))
    assert not torch.allclose(logits_of(tuned, tiny.tokenizer, "Shout cat"), before, atol=1e-4)


def test_training_continues_from_an_existing_adapter(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    first = train(config(tiny_folder, epochs=4), shout_examples(), output_dir=tmp_path / "a", base=tiny)
    second = train(
        config(tiny_folder, epochs=1, init_adapter=str(first.output_dir)),
        shout_examples(),
        output_dir=tmp_path / "b",
        base=tiny,
    )
    assert second.step_losses[0] < first.step_losses[0] - 0.2
    assert (second.output_dir / "adapter_model.safetensors").exists()


def test_full_fine_tuning_writes_a_model_folder(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    before = logits_of(tiny.model, tiny.tokenizer, "Shout cat")
    result = train(
        config(tiny_folder, method="full", learning_rate_multiplier=20.0),
        shout_examples(),
        output_dir=tmp_path / "full",
        base=tiny,
    )
    assert result.step_losses[-1] < result.step_losses[0]
    assert torch.equal(logits_of(tiny.model, tiny.tokenizer, "Shout cat"), before)  # trained a copy
    reloaded = load_model(str(result.output_dir), cache_dir=tmp_path)
    assert reloaded.tokenizer.chat_template == tiny.tokenizer.chat_template
    assert not torch.allclose(logits_of(reloaded.model, reloaded.tokenizer, "Shout cat"), before, atol=1e-4)


def test_full_fine_tuning_from_an_adapter_starts_from_the_merged_weights(
    tiny_folder: Path, tiny: LoadedModel, tmp_path: Path
) -> None:
    adapter = train(config(tiny_folder), shout_examples(), output_dir=tmp_path / "adapter", base=tiny).output_dir
    before = logits_of(tiny.model, tiny.tokenizer, "Shout cat")
    with adapter_applied(tiny.model, adapter) as tuned:
        with_adapter = logits_of(tuned, tiny.tokenizer, "Shout cat")
    # A zero learning rate: the saved model is exactly where training started.
    result = train(
        config(tiny_folder, method="full", init_adapter=str(adapter), epochs=1, learning_rate_multiplier=0.0),
        shout_examples(),
        output_dir=tmp_path / "full",
        base=tiny,
    )
    assert torch.equal(logits_of(tiny.model, tiny.tokenizer, "Shout cat"), before), "the lent base is untouched"
    reloaded = load_model(str(result.output_dir), cache_dir=tmp_path)
    assert not any("lora" in name for name, _ in reloaded.model.named_modules())
    assert torch.allclose(logits_of(reloaded.model, reloaded.tokenizer, "Shout cat"), with_adapter, atol=1e-5)
    assert not torch.allclose(with_adapter, before, atol=1e-4)


def test_it_refuses_an_output_folder_in_use(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        train(config(tiny_folder), shout_examples(), output_dir=tmp_path / "out", base=tiny)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """On a busy 2-core machine two torch threads spin at every barrier and run several
    times slower than one; CI machines are often busy, so the real fine-tune uses one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_full_fine_tuning_takes_a_much_smaller_step_than_lora() -> None:
    full, lora = TrainingConfig(method="full"), TrainingConfig(method="lora")
    assert 1e-5 <= full.learning_rate <= 5e-5  # the usual range for all the weights
    assert full.learning_rate <= lora.learning_rate / 20


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_full_fine_tuning_of_the_bundled_model_learns_and_saves_a_model_that_answers(tmp_path: Path) -> None:
    """8 Parley-code pairs, 3 epochs of batch 4 (6 steps) at the default learning rate.

    About 20 s on one thread: 15-18 s of training, then saving (540 MB), reloading and answering.
    """
    loaded = load_model("bundled", cache_dir=ROOT / ".cache" / "models")
    pairs = b"".join((DATA / "parley_codes.jsonl").read_bytes().splitlines(keepends=True)[:8])
    examples = parse_dataset(pairs, tokenizer=loaded.tokenizer, context_length=loaded.context_length).examples
    # "auto" learning-rate multiplier, as an admin gets it: 1.0 at batch size 4.
    config = TrainingConfig.from_hyperparameters(
        resolve_hyperparameters(len(examples), epochs=3, batch_size=4), base_model="bundled", method="full"
    )
    assert config.learning_rate == BASE_LEARNING_RATES["full"]
    base_loss, base_accuracy = score_examples(loaded.model, loaded.tokenizer, examples)

    result = train(config, examples, output_dir=tmp_path / "full", base=loaded)

    assert result.steps == 6 and all(math.isfinite(loss) for loss in result.step_losses)
    epoch_losses = [m.train_loss for m in result.epoch_metrics]
    assert epoch_losses[-1] < epoch_losses[0] * 0.7, epoch_losses
    assert result.step_losses[-1] < result.step_losses[0]
    assert score_examples(loaded.model, loaded.tokenizer, examples) == (base_loss, base_accuracy), "trained a copy"
    metadata = json.loads((result.output_dir / METADATA_FILE).read_text())
    assert (metadata["method"], metadata["hyperparameters"]["learning_rate"]) == ("full", config.learning_rate)

    tuned = load_model(str(result.output_dir), cache_dir=tmp_path)
    assert tuned.tokenizer.chat_template == loaded.tokenizer.chat_template
    after = evaluate(tuned.model, tuned.tokenizer, examples)
    assert after.loss < base_loss and after.token_accuracy > base_accuracy
    assert sum(1 for row in after.rows if row.answer) >= len(examples) // 2, [row.answer for row in after.rows]
