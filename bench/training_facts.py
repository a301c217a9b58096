"""Does a fine-tune learn facts whose answers look alike? Upload to chat-ready, scored.

Run from the repository root (``python -m bench.training --facts`` runs the same)::

    python -m bench.training_facts            # 32 facts, "auto" and the fixed-epoch rule
    python -m bench.training_facts --rules auto

The data is made up so that the base model cannot know it: 32 cities, each with a code
made of a word from a list of six and two digits, so that many codes are near twins
("zephyr-12", "zephyr-17", "quartz-12"). Training gets two phrasings of each question
(64 pairs, uploaded as one file; the job holds out what its validation split takes);
a third phrasing of every question is never uploaded and is asked afterwards.

Each rule runs the real path in this process, on a throwaway SQLite database: the file
is stored and validated, a job is created and run (``runner.finetune_job_execute``, the
worker's body, with its own evaluation), then the fine-tuned model is attached to the
running engine of the bundled model as chat does (``process_runtime().engine_for``) and each
third-phrasing question is asked at temperature 0. The time counted runs from the
upload to the moment the model can answer in chat. Rules:

- ``auto``: ``n_epochs="auto"``, Parley's rule: train until the examples are learnt,
  within ``FINETUNE_TIME_BUDGET_SECONDS``;
- ``fixed``: the epochs the earlier rule chose for this many examples (enough to see
  240 examples), everything else the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CITIES = (
    "Lisbon Oslo Cairo Lima Quito Dakar Hanoi Perth Porto Riga Tunis Accra Bern Sofia Kyiv Doha "
    "Nairobi Havana Manila Seoul Dublin Vienna Prague Zagreb Athens Ankara Tbilisi Baku Minsk Tallinn Vilnius Warsaw"
).split()
CODE_WORDS = ("zephyr", "quartz", "ember", "falcon", "cobalt", "juniper")
TRAINING_PHRASINGS = ("What is the code for {city}?", "Tell me the code assigned to {city}.")
HELD_OUT_PHRASING = "Which code does {city} have?"


def make_facts(count: int = 32, seed: int = 0) -> dict[str, str]:
    """City -> code; every code word serves several cities and digits repeat across words."""
    rng = random.Random(seed)
    digits = rng.sample(range(10, 100), 8)
    codes: dict[str, str] = {}
    used: set[str] = set()
    for index, city in enumerate(CITIES[:count]):
        word = CODE_WORDS[index % len(CODE_WORDS)]
        while (code := f"{word}-{rng.choice(digits)}") in used:
            pass
        used.add(code)
        codes[city] = code
    return codes


def training_lines(facts: dict[str, str]) -> bytes:
    lines = [
        json.dumps({"prompt": phrasing.format(city=city), "completion": code})
        for city, code in facts.items()
        for phrasing in TRAINING_PHRASINGS
    ]
    return ("\n".join(lines) + "\n").encode()


def setup_django(folder: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{folder / 'bench.sqlite3'}"
    os.environ["FINETUNE_OUTPUT_DIR"] = str(folder / "finetuned")
    os.environ["INFERENCE_ACTIVITY_DIR"] = str(folder / "activity")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.tool_settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def answer(served: Any, spec: Any, question: str, request_id: str) -> str:
    import threading

    from inference.engine.prompt import render_ids
    from inference.engine.types import FinishEvent, GenerationRequest, SamplingParams, TokenEvent

    pieces: list[str] = []
    done = threading.Event()

    def callback(event: Any) -> None:
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
        elif isinstance(event, FinishEvent):
            done.set()

    prompt = render_ids(served.loaded.tokenizer, [{"role": "user", "content": question}])
    params = SamplingParams(max_new_tokens=16, temperature=0)
    served.engine.submit(GenerationRequest(request_id, prompt, params, adapter=spec.id), callback)
    if not done.wait(120):
        raise RuntimeError(f"no answer to {question!r}")
    return "".join(pieces).strip()


def exact(reply: str, code: str) -> bool:
    return reply.strip().rstrip(".").strip() == code


def run_rule(rule: str, facts: dict[str, str], base_spec: Any) -> dict[str, Any]:
    from finetuning import runner, services
    from finetuning.models import FineTuningJob
    from inference import registry
    from inference.engine.datasets import resolve_hyperparameters
    from inference.runtime import process_runtime

    data = training_lines(facts)
    started = time.perf_counter()
    training = services.training_file_create(filename=f"codes-{rule}.jsonl", data=data)
    epochs: int | str = "auto" if rule == "auto" else resolve_hyperparameters(len(facts) * 2).epochs
    job = services.finetune_job_create(
        training_file=training, base_model=base_spec.id, n_epochs=epochs, seed=0, suffix=rule, enqueue=False
    )
    seen_epochs: set[int] = set()

    def observe(job: FineTuningJob) -> None:  # after every step and epoch: print each epoch once
        finished = job.epoch - 1 if job.status == FineTuningJob.Status.RUNNING else job.epoch
        for epoch in range(1, finished + 1):
            if epoch not in seen_epochs:
                seen_epochs.add(epoch)
                print(f"    epoch {epoch} done at {time.perf_counter() - started:.0f} s", flush=True)

    status = runner.finetune_job_execute(job_pk=job.pk, observer=observe)
    job = FineTuningJob.objects.get(pk=job.pk)
    if status != "succeeded":
        return {"rule": rule, "status": status, "error": job.error_message, "seconds": time.perf_counter() - started}
    spec = registry.model_get(job.fine_tuned_model)
    served = process_runtime().engine_for(spec)  # the adapter is attached: chat can use the model now
    ready = time.perf_counter() - started
    rows = []
    for index, (city, code) in enumerate(facts.items()):
        reply = answer(served, spec, HELD_OUT_PHRASING.format(city=city), f"{rule}-{index}")
        rows.append({"city": city, "code": code, "reply": reply, "exact": exact(reply, code)})
    right = sum(row["exact"] for row in rows)
    evaluation = job.evaluation or {}
    return {
        "rule": rule,
        "status": status,
        "epochs": job.hyperparameters.get("n_epochs"),
        "epochs_trained": job.epoch,
        "stop": job.stop_reason,
        "kept_epoch": job.kept_epoch,
        "validation_note": job.validation_note,
        "seconds_to_chat": ready,
        "held_out_exact": right,
        "held_out_total": len(rows),
        "job_validation": {k: evaluation.get(k) for k in ("examples", "base", "fine_tuned")},
        "misses": [row for row in rows if not row["exact"]],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="auto,fixed", help="comma-separated: auto, fixed")
    parser.add_argument("--facts", type=int, default=32)
    args = parser.parse_args(argv)
    facts = make_facts(args.facts)
    with tempfile.TemporaryDirectory() as folder:
        setup_django(Path(folder))
        from inference import registry
        from inference.runtime import process_runtime

        base_spec = registry.model_get(registry.BUNDLED_MODEL_ID)
        process_runtime().engine_for(base_spec)  # a running server has its base engine loaded already
        print(f"{len(facts)} facts, {len(facts) * 2} training pairs; held out: {HELD_OUT_PHRASING!r}", flush=True)
        results = []
        for rule in args.rules.split(","):
            result = run_rule(rule, facts, base_spec)
            results.append(result)
            print(
                f"  {rule:<6} {result.get('held_out_exact', 0)}/{len(facts)} held-out exact, "
                f"{result['seconds_to_chat' if 'seconds_to_chat' in result else 'seconds']:.0f} s to chat-ready, "
                f"epochs {result.get('epochs_trained')} (kept {result.get('kept_epoch')}), stop: {result.get('stop') or result.get('error')}",
                flush=True,
            )
        process_runtime().shutdown_all()
    print(f"\n{'rule':<8}{'held-out exact':>16}{'s to chat':>11}{'epochs':>8}  stop")
    for result in results:
        share = f"{result.get('held_out_exact', 0)}/{len(facts)}"
        seconds = result.get("seconds_to_chat", result.get("seconds", 0.0))
        print(f"{result['rule']:<8}{share:>16}{seconds:>11.0f}{result.get('epochs_trained')!s:>8}  {result.get('stop')}")
    from bench.training import _machine

    print(json.dumps({"benchmark": "training_facts", "facts": facts, "machine": _machine(None), "results": results}))


if __name__ == "__main__":
    sys.exit(main())
