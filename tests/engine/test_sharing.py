"""Chat and training on one machine: engines mark when they write, training gives way."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from inference.engine.loading import load_model
from inference.engine.sharing import ChatActivity, ComputeShare
from inference.engine.training import TrainingConfig, train
from inference.engine.types import GenerationRequest, SamplingParams
from tests.engine.conftest import prompt_ids, submit
from tests.engine.test_training import shout_examples


def test_a_marker_exists_exactly_while_the_engine_is_busy(tmp_path: Path) -> None:
    serving, training = ChatActivity(tmp_path / "activity", "a"), ChatActivity(tmp_path / "activity")
    assert not training.busy()  # no folder yet
    serving.set_busy(True)
    assert training.busy() and serving.marker.exists()
    serving.set_busy(False)
    assert not training.busy() and not serving.marker.exists()


def test_a_marker_left_by_a_dead_process_is_ignored_and_removed(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{int(child.stdout)}-engine"
    stale.touch()
    assert not ChatActivity(tmp_path).busy()
    assert not stale.exists()


def test_an_unwritable_folder_does_not_stop_chat(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ChatActivity(blocker / "activity").set_busy(True)  # logs a warning, raises nothing


def test_the_share_follows_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = [False]
    share = ComputeShare(threads=2, yield_threads=1, chat_busy=lambda: busy[0], poll_seconds=0)
    previous = torch.get_num_threads()
    try:
        share.pace()
        assert torch.get_num_threads() == 2
        busy[0] = True
        share.pace()
        assert torch.get_num_threads() == 1
        busy[0] = False
        share.pace()
        assert torch.get_num_threads() == 2
        share.finish()
        assert share.yielded_seconds > 0
    finally:
        torch.set_num_threads(previous)


def threads_used(seconds_per_pass: dict[int, float], passes: int = 30) -> tuple[list[int], ComputeShare]:
    """Run ``passes`` passes of 100 tokens on a fake clock where a pass on N threads takes
    ``seconds_per_pass[N]``; the thread count of each pass, and the share."""
    now = [0.0]
    share = ComputeShare(threads=2, probe_every=10, clock=lambda: now[0])
    used = []
    previous = torch.get_num_threads()
    try:
        for _ in range(passes):
            share.pace(100)
            used.append(torch.get_num_threads())
            now[0] += seconds_per_pass[used[-1]]
    finally:
        torch.set_num_threads(previous)
    return used, share


def test_a_run_on_one_thread_keeps_it_past_every_probe() -> None:
    """FINETUNE_THREADS=1 leaves nothing to compare against: the probe every
    ``probe_every`` passes must not look for another count (a real fine-tune failed
    with StopIteration at its 40th pass)."""
    now = [0.0]
    share = ComputeShare(threads=1, probe_every=10, clock=lambda: now[0])
    previous = torch.get_num_threads()
    try:
        for _ in range(35):
            share.pace(100)
            assert torch.get_num_threads() == 1
            now[0] += 1.0
    finally:
        torch.set_num_threads(previous)
    assert share.seconds_per_token == {1: 0.01}


def test_on_a_loaded_machine_the_share_takes_the_faster_thread_count() -> None:
    """Other work holds the cores: a pass takes 2 s on two threads and 1 s on one, so
    after trying both the run stays on one thread, and looks at two again every
    ``probe_every`` passes."""
    used, share = threads_used({2: 2.0, 1: 1.0})
    assert used[:4] == [2, 2, 1, 1]  # each measured twice
    assert used[4:].count(1) >= 23 and 2 in used[4:]  # the faster one, with a look back now and then
    assert share.seconds_per_token == pytest.approx({2: 0.02, 1: 0.01})


def test_on_a_quiet_machine_the_share_keeps_every_core() -> None:
    used, _ = threads_used({2: 0.6, 1: 1.0})
    assert used[4:].count(2) >= 23


def test_the_engine_reports_work_and_the_end_of_it(make_engine) -> None:
    changes: list[bool] = []
    idle_again = threading.Event()

    def on_busy(busy: bool) -> None:
        changes.append(busy)
        if not busy:
            idle_again.set()

    engine = make_engine(on_busy=on_busy)
    params = SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True)
    first = submit(engine, GenerationRequest("a", prompt_ids(engine, "Hello there"), params))
    second = submit(engine, GenerationRequest("b", prompt_ids(engine, "Good morning"), params))
    first.wait(), second.wait()
    assert idle_again.wait(10), "the engine never said it was idle again"
    assert changes[0] is True and changes[-1] is False
    assert all(a != b for a, b in itertools.pairwise(changes))  # only changes are reported


def test_training_drops_its_threads_while_chat_writes(tiny_model_dir: Path, tmp_path: Path) -> None:
    activity = ChatActivity(tmp_path / "activity", "engine")
    busy = ChatActivity(tmp_path / "activity").busy
    share = ComputeShare(threads=2, yield_threads=1, chat_busy=busy, poll_seconds=0, adapt=False)
    seen: list[int] = []

    def on_progress(step: int, *rest: object) -> None:
        seen.append(torch.get_num_threads())  # what the step that just ended ran on
        activity.set_busy(step in (2, 3))  # chat writes while steps 3 and 4 run

    previous = torch.get_num_threads()
    try:
        train(
            TrainingConfig(base_model=str(tiny_model_dir), epochs=1, batch_size=2, threads=2),
            shout_examples(),
            output_dir=tmp_path / "out",
            base=load_model(str(tiny_model_dir), cache_dir=tmp_path),
            on_progress=on_progress,
            share=share,
        )
    finally:
        torch.set_num_threads(previous)
    assert seen == [2, 2, 1, 1, 2, 2]
    assert share.yielded_seconds > 0
