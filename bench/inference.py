"""Parley's engine against transformers ``generate``, on the same prompts, in one run.

Run from the repository root::

    python -m bench.inference            # 128 new tokens per reply (a few minutes)
    python -m bench.inference --quick    # 32 new tokens, under two minutes
    python -m bench.inference --weights-study   # also time fp32 / int8 / torch.compile steps

It measures (bundled SmolLM2-135M-Instruct, ~200-token chat prompts, greedy, replies of
a fixed length):
1. the baseline: transformers ``generate`` on one stream, and on a left-padded static
   batch of 16, plus its full re-prefill of a ~1,500-token conversation;
2. Parley's engine at 1, 4, 8 and 16 concurrent streams (all submitted at once), a chat
   arriving while 8 others stream, and the follow-up turn of the long conversation
   (its earlier turn kept in the prefix cache).
It prints a table and one JSON line. Ratios are speedups (>1 means Parley is better):
throughput is engine/baseline, latencies baseline/engine. The baseline for one stream
and the follow-up turn is ``generate`` on one stream; for 4-16 streams the static
batch of 16. This machine's speed drifts between hours: only ratios from one run mean
anything.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inference.engine.loading import load_model
from inference.engine.scheduler import Engine, in_own_thread
from inference.engine.types import EngineEvent, FinishEvent, GenerationRequest, SamplingParams, TokenEvent
from inference.engine.weights import WEIGHT_MODES, cannot_run

CACHE_DIR = Path(".cache/models")
TOPICS = [
    "planning a team offsite",
    "migrating a database",
    "writing release notes",
    "onboarding a new engineer",
    "reviewing a pull request",
    "choosing a logging library",
    "fixing a flaky test",
    "preparing a customer demo",
    "budgeting cloud costs",
    "designing an API",
    "running a retrospective",
    "handling an outage",
    "writing documentation",
    "hiring a designer",
    "improving build times",
    "securing secrets",
]
FILLER = (
    "We met on Tuesday and went through the open questions one by one. Some of them were "
    "easy, others need more thought, and a few depend on people who were not in the room. "
)


@dataclass
class Run:
    """What one scenario measured."""

    name: str
    streams: int
    tokens: int = 0
    wall: float = 0.0
    decode_tokens_per_s: float = 0.0
    first_token: list[float] = field(default_factory=list)
    inter_token: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "streams": self.streams,
            "tokens_per_s": round(self.tokens_per_s, 1),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 1),
            "first_token_p50": _round(percentile(self.first_token, 50)),
            "first_token_p95": _round(percentile(self.first_token, 95)),
            "inter_token_p50": _round(percentile(self.inter_token, 50)),
            "inter_token_p95": _round(percentile(self.inter_token, 95)),
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Peak resident memory of this process while a scenario runs."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


# -- prompts -------------------------------------------------------------------


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(t) for t in encoded]


def build_prompts(tokenizer: Any, count: int, target_tokens: int) -> list[list[int]]:
    prompts = []
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        body = f"Here are my notes about {topic}. "
        while len(tokenizer.encode(body)) < target_tokens - 40:
            body += FILLER
        body += f"Please summarise the notes about {topic} in a few bullet points."
        prompts.append(chat_ids(tokenizer, [{"role": "user", "content": body}]))
    return prompts


def build_conversation(tokenizer: Any, target_tokens: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant for a software team."}]
    turn = 0
    while len(chat_ids(tokenizer, messages)) < target_tokens - 120:
        topic = TOPICS[turn % len(TOPICS)]
        messages.append({"role": "user", "content": f"Tell me about {topic}. " + FILLER * 2})
        messages.append({"role": "assistant", "content": f"Sure. For {topic}, " + FILLER * 2})
        turn += 1
    messages.append({"role": "user", "content": "Thanks. What should we do first?"})
    return messages


# -- the baseline: transformers generate ---------------------------------------


class StepClock:
    """A transformers streamer that timestamps every generation step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def baseline_generate(model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int, name: str) -> Run:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    clock = StepClock()
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad,
            streamer=clock,
        )
    run = Run(name, len(prompts))
    run.wall = time.perf_counter() - started
    run.tokens = len(prompts) * len(clock.times)
    first = clock.times[0] - started
    run.first_token = [first] * len(prompts)
    gaps = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    run.inter_token = gaps * len(prompts)
    if len(clock.times) > 1:
        run.decode_tokens_per_s = len(prompts) * (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
    return run


# -- Parley's engine -------------------------------------------------------------


class Recorder:
    """Collects timestamped events of one request."""

    def __init__(self, submitted: float) -> None:
        self.submitted = submitted
        self.events: list[tuple[float, int]] = []
        self.finish: FinishEvent | None = None
        self.first_at: float | None = None
        self.finished_at = 0.0
        self.done = threading.Event()

    def __call__(self, event: EngineEvent) -> None:
        now = time.perf_counter()
        if isinstance(event, TokenEvent):
            if self.first_at is None:
                self.first_at = now
            self.events.append((now, event.completion_tokens))
        else:
            self.finish = event
            self.finished_at = now
            self.done.set()

    def first_token_seconds(self) -> float:
        assert self.finish is not None and self.finish.first_token_seconds is not None
        return self.finish.first_token_seconds

    def token_times(self) -> list[float]:
        """One timestamp per token (tokens released together share one)."""
        times, seen = [], 0
        for at, count in self.events:
            times.extend([at] * (count - seen))
            seen = count
        return times

    def gaps(self) -> list[float]:
        gaps, previous, seen = [], None, 0
        for at, count in self.events:
            if previous is not None:
                gaps.extend([(at - previous) / (count - seen)] * (count - seen))
            previous, seen = at, count
        return gaps


def engine_run(engine: Engine, prompts: list[list[int]], new_tokens: int, name: str, arrivals: int = 0) -> Run:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
    recorders = []
    started = time.perf_counter()
    with RssSampler() as rss:
        for index, prompt in enumerate(prompts):
            recorder = Recorder(time.perf_counter())
            engine.submit(GenerationRequest(f"{name}-{index}", prompt, params), recorder)
            recorders.append(recorder)
        late = _late_arrivals(engine, recorders, prompts, params, name, arrivals)
        for recorder in recorders + late:
            recorder.done.wait()
    run = Run(name, len(prompts))
    run.wall = max(r.finished_at for r in recorders) - started
    run.tokens = sum(r.finish.completion_tokens for r in recorders if r.finish)
    run.first_token = [r.first_token_seconds() for r in recorders]
    run.inter_token = [gap for r in recorders for gap in r.gaps()]
    run.decode_tokens_per_s = _steady_decode_rate(recorders)
    run.peak_rss_mb = rss.peak
    if late:
        engine_run.arrivals = [r.first_token_seconds() for r in late]
    return run


def _late_arrivals(engine, recorders, prompts, params, name, arrivals: int) -> list[Recorder]:
    """Chats that arrive one by one while the first batch streams."""
    late = []
    for index in range(arrivals):
        while not all(r.first_at for r in recorders) and not any(r.done.is_set() for r in recorders):
            time.sleep(0.01)
        recorder = Recorder(time.perf_counter())
        prompt = [*prompts[index % len(prompts)][:-2], prompts[0][-2], prompts[0][-1]]
        short = SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True)
        engine.submit(GenerationRequest(f"{name}-late-{index}", prompt, short), recorder)
        recorder.done.wait()
        late.append(recorder)
    return late


def _steady_decode_rate(recorders: list[Recorder]) -> float:
    """Tokens per second while every stream of the scenario was decoding."""
    def tokens_within(start: float, end: float) -> int:
        return sum(1 for r in recorders for at in r.token_times() if start < at <= end)

    start = max(r.first_at or 0.0 for r in recorders)
    end = min(r.token_times()[-1] for r in recorders)
    count = tokens_within(start, end)
    if count < 4 * len(recorders):
        # Fewer than four steps with every stream in: take the whole span instead
        # (admission included), which can only understate the rate.
        start = min(r.first_at or 0.0 for r in recorders)
        end = max(r.token_times()[-1] for r in recorders)
        count = tokens_within(start, end)
    return count / (end - start) if end > start else 0.0


def engine_follow_up(engine: Engine, tokenizer: Any, messages: list[dict[str, str]]) -> tuple[Run, int, int]:
    """First turn with a cache key, then the follow-up turn; time the follow-up's first token."""
    first_prompt = chat_ids(tokenizer, messages)
    params = SamplingParams(max_new_tokens=16, temperature=0)
    recorder = Recorder(time.perf_counter())
    engine.submit(GenerationRequest("history-1", first_prompt, params, cache_key="bench-conv"), recorder)
    recorder.done.wait()
    assert recorder.finish is not None
    reply = tokenizer.decode(list(recorder.finish.completion_ids), skip_special_tokens=True)
    follow_up = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": "And second?"}]
    prompt = chat_ids(tokenizer, follow_up)
    recorder = Recorder(time.perf_counter())
    engine.submit(GenerationRequest("history-2", prompt, params, cache_key="bench-conv"), recorder)
    recorder.done.wait()
    assert recorder.finish is not None
    run = Run("engine, long follow-up", 1, tokens=recorder.finish.completion_tokens)
    run.wall = recorder.finished_at - recorder.submitted
    run.first_token = [recorder.first_token_seconds()]
    run.inter_token = recorder.gaps()
    return run, len(prompt), recorder.finish.reused_prompt_tokens


# -- the weights study -----------------------------------------------------------


def weights_study(batch_sizes: tuple[int, ...] = (1, 16)) -> dict[str, dict[int, float]]:
    """Milliseconds per batched decode step for fp32, bf16 (where the CPU runs it),
    int8-head, smoothed int8 and torch.compile'd fp32."""
    results: dict[str, dict[int, float]] = {}
    for form in ("fp32", "bf16", "int8-head", "int8", "compile"):
        loaded = load_model("bundled", cache_dir=CACHE_DIR)
        if form == "bf16" and (problem := cannot_run("bf16", loaded.model)):
            print(f"  bf16: skipped ({problem})")
            continue
        engine = Engine(loaded, weights="fp32" if form == "compile" else form)
        if form == "compile":
            engine.model.forward = torch.compile(engine.model.forward, dynamic=True)
        results[form] = {}
        for batch in batch_sizes:
            cache = engine._new_cache(batch)
            for row in range(batch):
                cache.add_empty_row()
                cache.lengths[row] = 250 + row
            ids = [[100 + row] for row in range(batch)]
            started = time.perf_counter()
            engine._forward(cache, ids, [None] * batch)  # includes compile time once
            warm = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(5):
                engine._forward(cache, ids, [None] * batch)
            results[form][batch] = round((time.perf_counter() - started) / 5 * 1000, 1)
            print(f"  {form:8} batch {batch:2}: {results[form][batch]:7.1f} ms/step (first call {warm:.1f} s)")
        engine.shutdown()
        del engine, loaded
        gc.collect()
    return results


# -- report ----------------------------------------------------------------------


def ratio(engine_value: float | None, baseline_value: float | None, *, higher_is_better: bool) -> float | None:
    if not engine_value or not baseline_value:
        return None
    value = engine_value / baseline_value if higher_is_better else baseline_value / engine_value
    return round(value, 2)


def compare(run: Run, baseline: Run) -> dict[str, float | None]:
    mine, theirs = run.summary(), baseline.summary()
    out = {}
    for key, higher in (
        ("tokens_per_s", True),
        ("decode_tokens_per_s", True),
        ("first_token_p50", False),
        ("first_token_p95", False),
        ("inter_token_p50", False),
        ("inter_token_p95", False),
    ):
        out[key] = ratio(mine[key], theirs[key], higher_is_better=higher)
    return out


def print_table(rows: list[tuple[Run, Run | None]]) -> None:
    header = f"{'scenario':32} {'tok/s':>7} {'decode':>7} {'ft p50':>7} {'ft p95':>7} {'itl p50':>8} {'itl p95':>8} {'RSS MB':>7}  ratios (tok/s, decode, ft p50, itl p50)"
    print(header)
    print("-" * len(header))
    for run, baseline in rows:
        s = run.summary()
        ratios = compare(run, baseline) if baseline else {}
        text = (
            f"{s['name']:32} {s['tokens_per_s']:7.1f} {s['decode_tokens_per_s']:7.1f} "
            f"{_fmt(s['first_token_p50'])} {_fmt(s['first_token_p95'])} {_fmt(s['inter_token_p50'], 8)} "
            f"{_fmt(s['inter_token_p95'], 8)} {_fmt(s['peak_rss_mb'], 7, 0)}"
        )
        if ratios:
            text += "  " + ", ".join(
                _fmt(ratios[k], 0, 2).strip() + "x"
                for k in ("tokens_per_s", "decode_tokens_per_s", "first_token_p50", "inter_token_p50")
            )
        print(text)


def _fmt(value: float | None, width: int = 7, digits: int = 3) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 new tokens per reply (under two minutes)")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--weights", default="auto", choices=WEIGHT_MODES)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--weights-study", action="store_true", help="also time fp32, int8 and torch.compile steps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    began = time.perf_counter()

    # 1. The baseline, on its own fp32 copy of the model (freed before the engine loads).
    loaded = load_model("bundled", cache_dir=CACHE_DIR, device=args.device)
    tokenizer = loaded.tokenizer
    prompts = build_prompts(tokenizer, 16, 200)
    conversation = build_conversation(tokenizer, 1500)
    print(f"prompts: {len(prompts)} x ~{statistics.mean(map(len, prompts)):.0f} tokens, {new_tokens} new tokens")
    # Each side's torch work runs on a thread of its own that ends before the other side
    # starts, as the engine's does in the app (scheduler.in_own_thread explains why).
    baseline_one = in_own_thread(baseline_generate, loaded.model, tokenizer, prompts[:1], new_tokens, "generate, 1 stream")
    baseline_batch = in_own_thread(
        baseline_generate, loaded.model, tokenizer, prompts, new_tokens, "generate, static batch 16"
    )
    history_prompt = chat_ids(
        tokenizer,
        [*conversation, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "And second?"}],
    )
    baseline_history = in_own_thread(
        baseline_generate, loaded.model, tokenizer, [history_prompt], 2, "generate, long follow-up"
    )
    # The fidelity of the engine's form, measured on the same weights (bench.fidelity
    # measures it in full): fp32 targets from this copy, before it is freed. On a thread
    # of its own too: an OpenMP team left on this thread slowed the engine's steps on
    # two threads (one row: 27.7 ms instead of 22.8).
    from bench.fidelity import Reference, quick_fidelity, quick_targets

    targets = in_own_thread(lambda copy: quick_targets(Reference(16, copy)), loaded)
    del loaded
    gc.collect()

    # 2. The engine.
    engine = Engine(load_model("bundled", cache_dir=CACHE_DIR, device=args.device), weights=args.weights)
    engine.start()
    print(f"engine: {engine.weights} ({engine.weights_reason}); {engine.invariance}; one row, ms: {engine.row_timing_ms}")
    rows: list[tuple[Run, Run | None]] = [(baseline_one, None), (baseline_batch, None), (baseline_history, None)]
    runs = {}
    for streams in (1, 4, 8, 16):
        base = baseline_one if streams == 1 else baseline_batch
        run = engine_run(
            engine,
            prompts[:streams],
            new_tokens,
            f"engine, {streams} streams",
            arrivals=(1 if args.quick else 3) if streams == 8 else 0,
        )
        runs[streams] = run
        rows.append((run, base))
    arrivals = getattr(engine_run, "arrivals", [])
    follow_up, history_tokens, reused = engine_follow_up(engine, tokenizer, conversation)
    rows.append((follow_up, baseline_history))
    fidelity = quick_fidelity(engine, targets)
    engine.shutdown()

    print()
    print_table(rows)
    print(f"chat arriving while 8 stream: first token {', '.join(f'{a:.2f}' for a in arrivals)} s")
    print(f"follow-up turn: {history_tokens} prompt tokens, {reused} reused from the prefix cache")
    print(
        f"fidelity of these {engine.weights} weights against fp32 (16 chats x 16 tokens, teacher-forced, "
        f"batched): top-1 {fidelity.top1:.1%}, mean KL {fidelity.mean_kl:.5f} nats/token"
    )
    report = {
        "machine": machine(),
        "weights": engine.weights,
        "fidelity": {"top1": round(fidelity.top1, 4), "mean_kl": round(fidelity.mean_kl, 6)},
        "new_tokens": new_tokens,
        "prompt_tokens": round(statistics.mean(map(len, prompts))),
        "baseline": {r.name: r.summary() for r in (baseline_one, baseline_batch, baseline_history)},
        "engine": {
            str(n): {**r.summary(), "ratios": compare(r, baseline_one if n == 1 else baseline_batch)}
            for n, r in runs.items()
        },
        "arrival_first_token_s": [round(a, 3) for a in arrivals],
        "follow_up": {
            **follow_up.summary(),
            "prompt_tokens": history_tokens,
            "reused_tokens": reused,
            "ratios": compare(follow_up, baseline_history),
        },
        "seconds": round(time.perf_counter() - began, 1),
    }
    if args.weights_study:
        print("\nweights study (ms per batched decode step, prompt ~250 tokens):")
        report["weights_study"] = weights_study()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
