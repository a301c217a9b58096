""""auto" epochs on the tiny model: train until the examples are learnt, or stop and say why.

Run alone with ``.venv/bin/python -m pytest tests/engine/test_training_stops_on_evidence.py -q``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.engine.answers import exact_matches
from inference.engine.loading import LoadedModel, load_model
from inference.engine.training import EpochMetrics, StopRule, TrainingConfig, stop_verdict, train
from tests.engine.test_training import pair
from tests.tiny_model import save_tiny_model

FACTS = [("Code of Oslo?", "AB"), ("Code of Rome?", "CD"), ("Code of Lima?", "EF")]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny(tiny_folder: Path, tmp_path: Path) -> LoadedModel:
    return load_model(str(tiny_folder), cache_dir=tmp_path)


def facts() -> list:
    return [pair(prompt, reply, line) for line, (prompt, reply) in enumerate(FACTS, start=1)]


def auto(tiny_folder: Path, **rule: float) -> TrainingConfig:
    stop = StopRule(**{"max_epochs": 60, "time_budget_seconds": 120.0, "patience": 3, **rule})
    # Full fine-tuning at a high rate: the tiny random model learns two letters in ~13 epochs.
    return TrainingConfig(
        base_model=str(tiny_folder), method="full", batch_size=3, learning_rate_multiplier=100.0, stop=stop
    )


def test_auto_trains_until_every_training_example_is_learnt(tiny: LoadedModel, tmp_path: Path) -> None:
    result = train(auto(tmp_path.parent), facts(), output_dir=tmp_path / "out", base=tiny)

    assert result.stop is not None and result.stop.reason == "learnt", result.stop
    assert result.stop.message == f"learnt 3/3 training examples after {result.epochs} epochs"
    assert result.stop.kept_epoch == result.epochs
    assert [m.learnt for m in result.epoch_metrics][-1] == 3
    tuned = load_model(str(result.output_dir), cache_dir=tmp_path)
    assert all(exact_matches(tuned.model, tiny.tokenizer, facts()))


def test_auto_stops_when_training_stops_improving(tiny: LoadedModel, tmp_path: Path) -> None:
    config = auto(tmp_path.parent)
    stuck = TrainingConfig(**{**config.__dict__, "learning_rate_multiplier": 1e-4})
    result = train(stuck, facts(), output_dir=tmp_path / "out", base=tiny)

    assert result.stop is not None and result.stop.reason == "stalled"
    assert result.stop.message == "training stopped improving at epoch 1 (0/3 training examples learnt)"
    assert result.epochs == 4 and not result.stop.learnt_everything


def test_auto_keeps_within_the_time_budget(tiny: LoadedModel, tmp_path: Path) -> None:
    result = train(auto(tmp_path.parent, time_budget_seconds=0.01), facts(), output_dir=tmp_path / "out", base=tiny)

    assert result.stop is not None and result.stop.reason == "time_budget"
    assert result.epochs == 1
    assert result.stop.message.startswith("time budget reached (0.01 s) after 1 epochs")


def test_explicit_epochs_still_mean_exactly_that_many(tiny: LoadedModel, tmp_path: Path) -> None:
    config = TrainingConfig(base_model=str(tmp_path.parent), epochs=2, batch_size=3)
    result = train(config, facts(), output_dir=tmp_path / "out", base=tiny)

    assert result.epochs == 2 and result.stop is not None
    assert (result.stop.reason, result.stop.kept_epoch) == ("epochs_done", 2)


def metrics(epoch: int, learnt: int, loss: float, val: float | None = None) -> EpochMetrics:
    return EpochMetrics(epoch, loss, val, None, learnt)


def test_the_best_epoch_is_kept_and_named() -> None:
    rule = StopRule(max_epochs=5, patience=2)
    history = [metrics(1, 1, 2.0), metrics(2, 3, 1.0), metrics(3, 2, 0.99), metrics(4, 2, 0.98)]

    verdict = stop_verdict(rule, history, 4, elapsed=1.0, epoch_seconds=0.1)

    assert verdict is not None and verdict.kept_epoch == 2
    assert verdict.message == "training stopped improving at epoch 2 (3/4 training examples learnt)"


def test_the_budget_keeps_room_for_what_comes_before_and_after_training() -> None:
    history = [metrics(1, 1, 2.0), metrics(2, 2, 1.0)]
    assert stop_verdict(StopRule(time_budget_seconds=100), history, 4, elapsed=60, epoch_seconds=30) is None
    rule = StopRule(time_budget_seconds=100, reserve_seconds=15)
    verdict = stop_verdict(rule, history, 4, elapsed=60, epoch_seconds=30)
    assert verdict is not None and verdict.reason == "time_budget"


def test_falling_validation_loss_counts_as_progress_and_the_cap_holds() -> None:
    rule = StopRule(max_epochs=4, patience=2)
    history = [metrics(1, 0, 2.0, 3.0), metrics(2, 0, 1.99, 2.5), metrics(3, 0, 1.98, 2.0)]
    assert stop_verdict(rule, history, 4, elapsed=1.0, epoch_seconds=0.1) is None

    verdict = stop_verdict(rule, [*history, metrics(4, 0, 1.97, 1.5)], 4, elapsed=1.0, epoch_seconds=0.1)

    assert verdict is not None and verdict.reason == "epoch_cap"
    assert verdict.message == "epoch cap reached (4 epochs; 0/4 training examples learnt)"
