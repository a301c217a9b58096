"""Parley's fine-tuning loop against a plain transformers ``Trainer``, same data, one run.

Run from the repository root::

    python -m bench.training            # 200 pairs, 1 epoch, each side twice (~10 min)
    python -m bench.training --quick    # 64 pairs, each side once (~3 min)
    python -m bench.training --ablation # also Parley padded (no packing) to split the gain
    python -m bench.training --chat     # chat's first token while a job trains (bench/training_chat.py)
    python -m bench.training --facts    # near-twin facts, upload to chat-ready (bench/training_facts.py)

Both sides fine-tune the bundled SmolLM2-135M-Instruct with LoRA through peft (same r,
alpha, targets, learning rate, warmup, clipping, batch of 8, seed), on the same
tokenized chat pairs of ~45-90 tokens with the loss on the reply tokens only:

- baseline: ``transformers.Trainer`` with ``DataCollatorForSeq2Seq`` (pads every batch
  to its longest example) and the model's own forward (vocabulary head on every
  position);
- Parley: ``inference.engine.training.train`` (packed rows, head on reply positions).

Each side runs in its own child process, so its peak RSS is its own (model load
included). Sides alternate (baseline, Parley, baseline, ...) and the best run of each
counts, because this shared machine's speed drifts. It prints a table with ratios
(Parley / baseline for throughput, baseline / Parley for memory) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE_DIR = Path(".cache/models")
LORA = {"r": 16, "alpha": 32, "targets": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
LEARNING_RATE = 2e-3
BATCH_SIZE = 8
WORDS = (
    "apple river stone lantern violin tiger copper harbor meadow comet falcon glacier "
    "maple candle anchor pepper velvet thunder orchid marble cedar pocket silver mango"
).split()


def make_examples(count: int, seed: int = 0) -> list[Any]:
    """Pairs whose reply is the prompt's words reversed: 2 to 14 words, so lengths vary."""
    from inference.engine.datasets import Example, Message

    rng = random.Random(seed)
    examples = []
    for line in range(1, count + 1):
        words = rng.sample(WORDS, rng.randint(2, 14))
        prompt = "Reverse the order of these words: " + " ".join(words)
        examples.append(Example((Message("user", prompt), Message("assistant", " ".join(reversed(words)))), line))
    return examples


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_parley(count: int, epochs: int, pack: bool) -> dict[str, Any]:
    from inference.engine.loading import load_model
    from inference.engine.training import TrainingConfig, train

    loaded = load_model("bundled", cache_dir=CACHE_DIR)
    config = TrainingConfig(
        epochs=epochs,
        batch_size=BATCH_SIZE,
        base_learning_rate=LEARNING_RATE,
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_targets=LORA["targets"],
        pack=pack,
    )
    with tempfile.TemporaryDirectory() as folder:
        result = train(config, make_examples(count), output_dir=Path(folder) / "adapter", base=loaded)
    return {
        "seconds": result.train_seconds,
        "examples": result.examples_seen,
        "tokens": result.tokens_seen,
        "final_loss": result.step_losses[-1],
    }


def run_trainer(count: int, epochs: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from inference.engine.loading import load_model
    from inference.engine.training import encode_example

    loaded = load_model("bundled", cache_dir=CACHE_DIR)
    encoded = [encode_example(loaded.tokenizer, e) for e in make_examples(count)]
    features = [
        {"input_ids": list(e.input_ids), "attention_mask": [1] * len(e.input_ids), "labels": list(e.labels)}
        for e in encoded
    ]
    torch.manual_seed(0)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules=list(LORA["targets"]), task_type="CAUSAL_LM")
    model = get_peft_model(loaded.model, lora)
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder,
            per_device_train_batch_size=BATCH_SIZE,
            num_train_epochs=epochs,
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="linear",
            warmup_steps=0.05,
            weight_decay=0.0,
            max_grad_norm=1.0,
            seed=0,
            use_cpu=True,
            save_strategy="no",
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        collator = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collator)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return {
        "seconds": seconds,
        "examples": count * epochs,
        "tokens": sum(len(e.input_ids) for e in encoded) * epochs,
        "final_loss": losses[-1] if losses else None,
    }


def child(side: str, count: int, epochs: int, threads: int | None) -> None:
    """Run one side in this process and print its figures as one JSON line."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if side == "trainer":
        figures = run_trainer(count, epochs)
    else:
        figures = run_parley(count, epochs, pack=side == "parley")
    figures.update(side=side, peak_rss_mb=peak_rss_mb())
    print("RESULT " + json.dumps(figures), flush=True)


def spawn(side: str, count: int, epochs: int, threads: int | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.training", "--child", side, "--examples", str(count), "--epochs", str(epochs)]
    command += ["--threads", str(threads)] if threads else []
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    figures = json.loads(line.removeprefix("RESULT "))
    figures["examples_per_second"] = figures["examples"] / figures["seconds"]
    figures["tokens_per_second"] = figures["tokens"] / figures["seconds"]
    print(
        f"  {side:<14} {figures['examples_per_second']:6.2f} examples/s  "
        f"{figures['tokens_per_second']:6.0f} tokens/s  {figures['peak_rss_mb']:6.0f} MB peak",
        flush=True,
    )
    return figures


def best_runs(sides: list[str], count: int, epochs: int, repeats: int, threads: int | None) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for side in sides:
            figures = spawn(side, count, epochs, threads)
            if side not in best or figures["examples_per_second"] > best[side]["examples_per_second"]:
                best[side] = figures
    return best


def report(best: dict[str, dict[str, Any]], count: int, epochs: int, threads: int | None) -> None:
    base = best["trainer"]
    print(f"\n{'side':<16}{'examples/s':>12}{'tokens/s':>10}{'peak MB':>9}{'x examples/s':>14}{'x memory':>10}")
    for side, figures in best.items():
        speed = figures["examples_per_second"] / base["examples_per_second"]
        memory = base["peak_rss_mb"] / figures["peak_rss_mb"]
        print(
            f"{side:<16}{figures['examples_per_second']:>12.2f}{figures['tokens_per_second']:>10.0f}"
            f"{figures['peak_rss_mb']:>9.0f}{speed:>14.2f}{memory:>10.2f}"
        )
    summary = {
        "benchmark": "training",
        "examples": count,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "machine": _machine(threads),
        "sides": best,
        "speedup_examples_per_second": best["parley"]["examples_per_second"] / base["examples_per_second"],
    }
    print(json.dumps(summary))


def _machine(threads: int | None) -> str:
    """CPU model, cores and torch threads: figures only compare on the same machine."""
    import os

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {threads or torch.get_num_threads()} threads"


def main() -> None:
    if "--chat" in sys.argv[1:]:
        from bench.training_chat import main as chat

        chat([arg for arg in sys.argv[1:] if arg != "--chat"])
        return
    if "--facts" in sys.argv[1:]:
        from bench.training_facts import main as facts

        facts([arg for arg in sys.argv[1:] if arg != "--facts"])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 pairs, each side once")
    parser.add_argument("--ablation", action="store_true", help="also run Parley without packing")
    parser.add_argument("--examples", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    parser.add_argument("--child", choices=["trainer", "parley", "parley-padded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    count = args.examples or (64 if args.quick else 200)
    if args.child:
        child(args.child, count, args.epochs, args.threads)
        return
    repeats = args.repeats or (1 if args.quick else 2)
    sides = ["trainer", "parley", *(["parley-padded"] if args.ablation else [])]
    print(f"Fine-tuning {count} pairs x {args.epochs} epoch(s), batch {BATCH_SIZE}, LoRA r={LORA['r']}:")
    report(best_runs(sides, count, args.epochs, repeats, args.threads), count, args.epochs, args.threads)


if __name__ == "__main__":
    main()
