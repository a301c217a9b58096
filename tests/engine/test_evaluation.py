"""Scoring held-out examples: greedy answers, exact match, token accuracy, adapters.

Run alone with ``.venv/bin/python -m pytest tests/engine/test_evaluation.py -q``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.engine.answers import EvaluationRow, generate_answers, normalize_answer
from inference.engine.datasets import Example, Message
from inference.engine.evaluation import adapter_applied, evaluate
from inference.engine.loading import LoadedModel, load_model
from inference.engine.training import TrainingConfig, score_examples, train
from tests.tiny_model import save_tiny_model


def pair(prompt: str, reply: str) -> Example:
    return Example((Message("user", prompt), Message("assistant", reply)))


HELD_OUT = [pair("Code for cat?", "Zorblat"), pair("And the code for a much longer animal name?", "quim set")]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny(tiny_folder: Path, tmp_path: Path) -> LoadedModel:
    return load_model(str(tiny_folder), cache_dir=tmp_path)


def test_answers_are_compared_ignoring_case_and_spacing() -> None:
    assert normalize_answer("  Zorblat \n") == normalize_answer("zorblat")
    assert normalize_answer("quim  set") == "quim set"
    assert normalize_answer("zorblat.") != normalize_answer("zorblat")


def test_batched_answers_equal_one_at_a_time(tiny: LoadedModel) -> None:
    prompts = [*HELD_OUT, pair("x", "y")]
    together = generate_answers(tiny.model, tiny.tokenizer, prompts, max_new_tokens=6, batch_size=3)
    alone = [generate_answers(tiny.model, tiny.tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert together == alone


def test_it_scores_exact_matches_and_lists_the_answers(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    replies = {"Code for cat?": " ZORBLAT ", "And the code for a much longer animal name?": "quimset"}

    def scripted_generate(input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> torch.Tensor:
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = tiny.tokenizer.decode(ids[mask.bool()])
            reply = next(r for p, r in replies.items() if p in prompt)
            answer = tiny.tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]
            rows.append(torch.cat([ids, torch.tensor(answer)]))
        width = max(len(r) for r in rows)
        return torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=0) for r in rows])

    monkeypatch.setattr(tiny.model, "generate", scripted_generate)
    result = evaluate(tiny.model, tiny.tokenizer, HELD_OUT)
    assert result.examples == 2
    assert result.exact_match == 0.5
    assert result.rows == [
        EvaluationRow("Code for cat?", "Zorblat", "ZORBLAT", exact=True),
        EvaluationRow("And the code for a much longer animal name?", "quim set", "quimset", exact=False),
    ]
    assert (result.loss, result.token_accuracy) == score_examples(tiny.model, tiny.tokenizer, HELD_OUT)


def test_token_accuracy_rises_after_training(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    examples = [pair("Shout cat", "CAT"), pair("Shout dog", "DOG")] * 4
    before = evaluate(tiny.model, tiny.tokenizer, examples[:2], max_new_tokens=4)
    result = train(
        TrainingConfig(base_model=str(tiny_folder), method="full", epochs=10, batch_size=4, learning_rate_multiplier=40),
        examples,
        output_dir=tmp_path / "full",
        base=tiny,
    )
    tuned = load_model(str(result.output_dir), cache_dir=tmp_path)
    after = evaluate(tuned.model, tuned.tokenizer, examples[:2], max_new_tokens=4)
    assert after.token_accuracy > before.token_accuracy
    assert after.loss < before.loss


def test_an_adapter_is_applied_and_removed_again(tiny_folder: Path, tiny: LoadedModel, tmp_path: Path) -> None:
    examples = [pair("Shout cat", "CAT")] * 4
    adapter = train(
        TrainingConfig(base_model=str(tiny_folder), epochs=2, batch_size=2, learning_rate_multiplier=10),
        examples,
        output_dir=tmp_path / "adapter",
        base=tiny,
    ).output_dir
    base_loss = evaluate(tiny.model, tiny.tokenizer, examples[:1]).loss
    with adapter_applied(tiny.model, adapter) as tuned:
        assert evaluate(tuned, tiny.tokenizer, examples[:1]).loss != base_loss
    assert not any("lora" in name for name, _ in tiny.model.named_modules())
    assert evaluate(tiny.model, tiny.tokenizer, examples[:1]).loss == base_loss
