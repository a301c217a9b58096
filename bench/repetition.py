"""How often the bundled model goes round in circles, with and without a repetition
penalty, and what the penalty does to its factual answers.

    python -m bench.repetition                      # penalties 0 (the baseline), 0.3, 0.6
    python -m bench.repetition --penalties 0 0.3 --weights fp32

Eight everyday requests, two seeds each, sampled as a new chat samples (the bundled
model's own temperature 0.2 and top_p 0.9 unless told), up to 400 new tokens, all
submitted at once to one engine. For each ``frequency_penalty`` it reports how many
replies ran to the token limit instead of ending, the share of repeated word 4-grams
in a reply (0: none repeats; a reply stuck in a loop scores near 1), mean and worst,
with each figure's ratio to the first penalty given (the baseline), and how many of
``bench.fidelity_set.FACTS`` it answers with the same sampling. A default penalty is
kept only if it does not lower the factual score.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

REQUESTS = [
    "Give me three tips for writing clear Python code, with a short code example.",
    "Write a short poem about autumn.",
    "Explain what a database index is.",
    "What are the benefits of exercise?",
    "Describe how to make a cup of tea.",
    "Tell me about the history of Rome.",
    "How do I learn to play guitar?",
    "Write a short story about a robot.",
]
SEEDS = (1, 2)
MAX_TOKENS = 400


def repeated_share(text: str) -> float:
    words = text.split()
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def run(engine, prompts: list[list[int]], penalty: float, sampling: dict, max_tokens: int = MAX_TOKENS) -> list[tuple[str, str]]:
    from inference.engine.types import FinishEvent, GenerationRequest, SamplingParams, TokenEvent

    texts: dict[str, list[str]] = {}
    finishes: dict[str, str] = {}
    done = threading.Semaphore(0)
    for index, prompt in enumerate(prompts):
        for seed in SEEDS:
            request_id = f"{penalty}-{index}-{seed}"
            texts[request_id] = []

            def collect(event, request_id=request_id) -> None:
                if isinstance(event, TokenEvent):
                    texts[request_id].append(event.text)
                elif isinstance(event, FinishEvent):
                    finishes[request_id] = event.finish_reason
                    done.release()

            params = SamplingParams(max_tokens, seed=seed, frequency_penalty=penalty, **sampling)
            engine.submit(GenerationRequest(request_id, prompt, params), collect)
    for _ in texts:
        done.acquire()
    return [("".join(texts[request_id]), finishes[request_id]) for request_id in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--penalties", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--weights", default="auto", help="the engine's weight form (default: auto, as served)")
    parser.add_argument("--cache-dir", default=".cache/models")
    parser.add_argument("--temperature", type=float, default=0.2, help="default: the bundled model's own")
    parser.add_argument("--top-p", type=float, default=0.9, help="default: the bundled model's own")
    args = parser.parse_args()
    sampling = {"temperature": args.temperature, "top_p": args.top_p}
    from bench.fidelity_set import FACTS, fact_chat, fact_correct
    from bench.inference import chat_ids
    from inference.engine.loading import load_model
    from inference.engine.scheduler import Engine

    loaded = load_model("bundled", cache_dir=Path(args.cache_dir))
    engine = Engine(loaded, max_batch_size=16, weights=args.weights)
    engine.start()
    system = {"role": "system", "content": "You are a helpful assistant."}
    prompts = [chat_ids(loaded.tokenizer, [system, {"role": "user", "content": text}]) for text in REQUESTS]
    fact_prompts = [chat_ids(loaded.tokenizer, fact_chat(question)) for question, _ in FACTS]
    rows = []
    for penalty in args.penalties:
        replies = run(engine, prompts, penalty, sampling)
        shares = [repeated_share(text) for text, _ in replies]
        answers = run(engine, fact_prompts, penalty, sampling, max_tokens=24)  # two seeds per question
        facts = sum(fact_correct(text, FACTS[i // len(SEEDS)][1]) for i, (text, _) in enumerate(answers))
        rows.append(
            {
                "frequency_penalty": penalty,
                "replies": len(replies),
                "hit_token_limit": sum(1 for _, finish in replies if finish == "length"),
                "repeated_4grams_mean": round(sum(shares) / len(shares), 3),
                "repeated_4grams_worst": round(max(shares), 3),
                "facts": facts,
                "facts_asked": len(answers),
            }
        )
    engine.shutdown()
    base = rows[0]
    print(
        f"Bundled model, weights {args.weights}, temperature {args.temperature}, top_p {args.top_p}, "
        f"up to {MAX_TOKENS} tokens:"
    )
    print(f"{'penalty':>8}{'at limit':>10}{'repeats mean':>14}{'vs base':>9}{'worst':>8}{'vs base':>9}{'facts':>10}")
    for row in rows:
        mean_ratio = row["repeated_4grams_mean"] / base["repeated_4grams_mean"] if base["repeated_4grams_mean"] else 0
        worst_ratio = (
            row["repeated_4grams_worst"] / base["repeated_4grams_worst"] if base["repeated_4grams_worst"] else 0
        )
        print(
            f"{row['frequency_penalty']:>8g}{row['hit_token_limit']:>6}/{row['replies']:<3}"
            f"{row['repeated_4grams_mean']:>14.3f}{mean_ratio:>8.2f}x{row['repeated_4grams_worst']:>8.3f}"
            f"{worst_ratio:>8.2f}x{row['facts']:>5}/{row['facts_asked']}"
        )
    print(json.dumps({"bench": "repetition", "weights": args.weights, **sampling, "rows": rows}))


if __name__ == "__main__":
    main()
