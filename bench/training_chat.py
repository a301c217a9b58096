"""Chat's first-token time while a fine-tuning job trains on the same machine.

Run from the repository root (``python -m bench.training --chat`` runs the same)::

    python -m bench.training_chat            # 12 chat requests per rule (~4 min)
    python -m bench.training_chat --quick    # 6 per rule

This process serves the bundled model the way a Parley web process does (the engine
with ``INFERENCE_THREADS``' default, every core but one, and a ``ChatActivity`` marker).
A child process trains a LoRA adapter on the bundled model the way the fine-tuning
worker does (niceness 10), under one of these rules:

- ``idle``: no training at all (the baseline);
- ``one thread``: every core but one, never yielding (the rule before yielding);
- ``all cores``: every core, never yielding (what not to do);
- ``yielding``: every core while chat is quiet, one thread while a reply is written
  (``ComputeShare``, Parley's rule now).

Under each rule, chat requests arrive one at a time at random moments of the training
steps (a short question, 8 greedy tokens); the bench measures each one's time to first
token and the training throughput over the same window, then prints a table with the
ratios against idle and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CACHE_DIR = Path(".cache/models")
RULES = ("idle", "one thread", "all cores", "yielding")
QUESTIONS = (
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "How many legs does a spider have?",
    "Write a haiku about rain.",
    "What is 12 times 11?",
    "Give me a word that rhymes with cat.",
)


# --- The training child -----------------------------------------------------------------


def train_child(rule: str, activity_dir: str) -> None:
    """Train until killed, printing one line per optimizer step (wall time, examples)."""
    import torch

    from bench.training import make_examples
    from inference.engine.loading import load_model
    from inference.engine.sharing import ChatActivity, ComputeShare
    from inference.engine.training import TrainingConfig, train

    cores = os.cpu_count() or 1
    threads = max(1, cores - 1) if rule == "one thread" else cores
    os.nice(10)
    torch.set_num_threads(threads)
    busy = ChatActivity(activity_dir).busy if rule == "yielding" else None
    share = ComputeShare(threads=threads, yield_threads=1, chat_busy=busy)
    loaded = load_model("bundled", cache_dir=CACHE_DIR, threads=threads)
    config = TrainingConfig(epochs=1000, batch_size=8, threads=threads)

    def on_progress(step: int, total: int, epoch: int, loss: float, lr: float, tokens: int, *rest: float) -> None:
        print(f"STEP {time.time():.4f} {step * config.batch_size}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        train(config, make_examples(400), output_dir=Path(folder) / "out", base=loaded, on_progress=on_progress, share=share)


class Trainer:
    """A training child process and the steps it has reported."""

    def __init__(self, rule: str, activity_dir: Path) -> None:
        command = [sys.executable, "-m", "bench.training_chat", "--train-child", rule, "--activity", str(activity_dir)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.steps: list[tuple[float, int]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("STEP "):
                _, at, examples = line.split()
                self.steps.append((float(at), int(examples)))

    def wait_until_training(self, steps: int = 2, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.steps) < steps:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the training child did not start training")
            time.sleep(0.1)

    def examples_per_second(self, start: float, end: float) -> float:
        """Over the steps that ended in the window, counted from the last one before it."""
        before = [step for step in self.steps if step[0] < start][-1:]
        inside = before + [step for step in self.steps if start <= step[0] <= end]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


# --- Chat ---------------------------------------------------------------------------------


def first_token_seconds(engine: Any, prompt_ids: list[int], request_id: str) -> float:
    from inference.engine.types import FinishEvent, GenerationRequest, SamplingParams, TokenEvent

    first = threading.Event()
    done = threading.Event()
    times: list[float] = []

    def callback(event: Any) -> None:
        if isinstance(event, TokenEvent) and not first.is_set():
            times.append(time.perf_counter())
            first.set()
        if isinstance(event, FinishEvent):
            done.set()

    started = time.perf_counter()
    engine.submit(GenerationRequest(request_id, prompt_ids, SamplingParams(max_new_tokens=8, temperature=0)), callback)
    if not done.wait(120) or not times:
        raise RuntimeError(f"request {request_id} got no reply")
    return times[0] - started


def probe(engine: Any, prompts: list[list[int]], count: int, rng: random.Random, label: str) -> list[float]:
    seconds = []
    for index in range(count):
        time.sleep(rng.uniform(0.3, 1.2))  # land at a random moment of a training step
        seconds.append(first_token_seconds(engine, prompts[index % len(prompts)], f"{label}-{index}"))
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 chat requests per rule")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--train-child", choices=RULES[1:], help=argparse.SUPPRESS)
    parser.add_argument("--activity", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_child:
        train_child(args.train_child, args.activity)
        return
    count = args.requests or (6 if args.quick else 12)

    import torch

    from inference.engine.loading import load_model
    from inference.engine.prompt import render_ids
    from inference.engine.scheduler import Engine
    from inference.engine.sharing import ChatActivity

    threads = max(1, (os.cpu_count() or 2) - 1)  # INFERENCE_THREADS' default
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        activity_dir = Path(folder) / "activity"
        loaded = load_model("bundled", cache_dir=CACHE_DIR, threads=threads)
        engine = Engine(loaded, on_busy=ChatActivity(activity_dir).set_busy)
        engine.start()
        prompts = [render_ids(loaded.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
        first_token_seconds(engine, prompts[0], "warm-up")
        print(f"{count} chat requests per rule; engine on {torch.get_num_threads()} thread(s), {engine.weights} weights")
        for rule in RULES:
            rng = random.Random(7)
            trainer = None if rule == "idle" else Trainer(rule, activity_dir)
            try:
                if trainer is not None:
                    trainer.wait_until_training()
                start = time.time()
                seconds = probe(engine, prompts, count, rng, rule)
                end = time.time()
                speed = trainer.examples_per_second(start, end) if trainer is not None else 0.0
            finally:
                if trainer is not None:
                    trainer.stop()
            results[rule] = {
                "first_token_p50_s": statistics.median(seconds),
                "first_token_max_s": max(seconds),
                "first_token_s": seconds,
                "training_examples_per_second": speed,
            }
            print(f"  {rule:<11} first token p50 {statistics.median(seconds) * 1000:6.0f} ms, "
                  f"max {max(seconds) * 1000:6.0f} ms; training {speed:5.2f} examples/s", flush=True)
        engine.shutdown()
    report(results, count)


def report(results: dict[str, dict[str, Any]], count: int) -> None:
    idle = results["idle"]
    print(f"\n{'rule':<12}{'p50 ms':>8}{'max ms':>8}{'x idle p50':>12}{'x idle max':>12}{'train ex/s':>12}")
    for rule, figures in results.items():
        print(
            f"{rule:<12}{figures['first_token_p50_s'] * 1000:>8.0f}{figures['first_token_max_s'] * 1000:>8.0f}"
            f"{figures['first_token_p50_s'] / idle['first_token_p50_s']:>12.2f}"
            f"{figures['first_token_max_s'] / idle['first_token_max_s']:>12.2f}"
            f"{figures['training_examples_per_second']:>12.2f}"
        )
    from bench.training import _machine

    print(json.dumps({"benchmark": "training_chat", "requests": count, "machine": _machine(None), "rules": results}))


if __name__ == "__main__":
    main()
