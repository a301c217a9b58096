"""Does a weight form keep the model's answers? Every form the engine offers against
transformers fp32 on the same weights, in one run.

Run from the repository root::

    python -m bench.fidelity             # 66 chats x 32 tokens, 48 factual questions
    python -m bench.fidelity --quick     # 32 chats x 16 tokens, the same questions
    python -m bench.fidelity --forms fp32,int8

The reference is the bundled model in fp32 through transformers itself (``generate``
and a plain forward). For each form, through the engine's own serving path:

1. teacher-forced on fp32's greedy replies (prefill, then the batched decode with 16
   requests in each step): top-1 agreement and mean KL(fp32 || form) per token;
2. free-running, one chat at a time: the share of chats whose first greedy tokens are
   identical to fp32's, and the mean position of the first difference;
3. the factual questions (``bench.fidelity_set.FACTS``), greedy, scored for the form
   and for fp32;
4. batch invariance: the share of chats whose greedy reply, and whose seeded sampled
   reply, is the same alone and submitted together with 16 other requests.

It prints a table and one JSON line; docs/performance.md keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.fidelity_set import CHATS, FACTS, fact_chat, fact_correct
from bench.inference import chat_ids, machine
from inference.engine.fidelity import Agreement, compare, teacher_forced_logprobs
from inference.engine.loading import load_model
from inference.engine.scheduler import Engine, generate_text
from inference.engine.types import FinishEvent, GenerationRequest, SamplingParams
from inference.engine.weights import WEIGHT_MODES

CACHE_DIR = Path(".cache/models")
BATCH = 16
FACT_TOKENS = 24


@dataclass
class FormReport:
    form: str
    served_as: str
    top1: float
    mean_kl: float
    max_kl: float
    positions: int
    identical_share: float
    first_difference: float
    facts: int
    facts_fp32: int
    greedy_invariant: float
    seeded_invariant: float
    decode_tokens_per_second: float
    meets_bar: bool


def meets_bar(agreement: Agreement, facts: int, facts_fp32: int, greedy_invariant: float, seeded: float) -> bool:
    """The default's bar: KL <= 0.006, top-1 >= 97 %, facts within one of fp32, invariant."""
    return (
        agreement.mean_kl <= 0.006
        and agreement.top1 >= 0.97
        and facts >= facts_fp32 - 1
        and greedy_invariant == 1.0
        and seeded == 1.0
    )


def until_eos(ids: list[int], eos: frozenset[int]) -> list[int]:
    for index, token in enumerate(ids):
        if token in eos:
            return ids[: index + 1]
    return ids


class Reference:
    """fp32 through transformers itself: greedy replies, their log-probs, the facts."""

    def __init__(self, tokens: int, loaded: Any = None, device: str = "cpu") -> None:
        loaded = loaded or load_model("bundled", cache_dir=CACHE_DIR, device=device)
        self.model, self.tokenizer, self.tokens = loaded.model, loaded.tokenizer, tokens
        config_eos = self.model.generation_config.eos_token_id
        eos = config_eos if isinstance(config_eos, list) else [config_eos]
        self.eos = frozenset(int(t) for t in [*eos, self.tokenizer.eos_token_id] if t is not None)

    @torch.inference_mode()
    def greedy(self, prompt: list[int], tokens: int) -> list[int]:
        output = self.model.generate(
            torch.tensor([prompt], device=self.model.device), max_new_tokens=tokens, do_sample=False, pad_token_id=self.tokenizer.eos_token_id
        )
        return until_eos(output[0, len(prompt) :].tolist(), self.eos)

    @torch.inference_mode()
    def logprobs(self, prompt: list[int], reply: list[int]) -> torch.Tensor:
        ids = torch.tensor([prompt + reply[:-1]], device=self.model.device)
        logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 :].float().cpu()
        return torch.log_softmax(logits, -1)

    def text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def quick_targets(reference: Reference, chats: int = 16, tokens: int = 16) -> tuple[list, list, list]:
    """Prompts, fp32 greedy replies and their log-probs for a short fidelity check."""
    prompts = [chat_ids(reference.tokenizer, chat) for chat in CHATS[::4][:chats]]
    replies = [reference.greedy(p, tokens) for p in prompts]
    return prompts, replies, [reference.logprobs(p, r) for p, r in zip(prompts, replies, strict=True)]


def quick_fidelity(engine: Engine, targets: tuple[list, list, list]) -> Agreement:
    prompts, replies, expected = targets
    return compare(expected, teacher_forced_logprobs(engine, prompts, replies))


def first_difference(a: list[int], b: list[int], limit: int) -> int:
    for index in range(min(len(a), len(b), limit)):
        if a[index] != b[index]:
            return index
    return min(len(a), len(b), limit) if a[:limit] != b[:limit] else limit


def engine_alone(engine: Engine, prompts: list[list[int]], params: SamplingParams, name: str) -> list[list[int]]:
    replies = []
    for index, prompt in enumerate(prompts):
        _, finish = generate_text(engine, GenerationRequest(f"{name}-{index}", prompt, params))
        replies.append(list(finish.completion_ids))
    return replies


class Finished:
    """Collects the completion ids of a group of requests; ``wait`` until all ended."""

    def __init__(self, count: int) -> None:
        self.ids: dict[int, list[int]] = {}
        self.count = count
        self.lock = threading.Lock()
        self.done = threading.Event()

    def callback(self, position: int) -> Any:
        def collect(event: Any) -> None:
            if isinstance(event, FinishEvent):
                with self.lock:
                    self.ids[position] = list(event.completion_ids)
                    if len(self.ids) == self.count:
                        self.done.set()

        return collect


def engine_together(engine: Engine, prompts: list[list[int]], params: SamplingParams, name: str) -> list[list[int]]:
    """Each prompt submitted at once with the 16 that follow it (cyclically)."""
    replies: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(prompts), BATCH + 1):
        group = [(start + k) % len(prompts) for k in range(BATCH + 1)]
        finished = Finished(len(group))
        for position, index in enumerate(group):
            engine.submit(GenerationRequest(f"{name}-{start}-{position}", prompts[index], params), finished.callback(position))
        assert finished.done.wait(600), "a batched request never finished"
        for position, index in enumerate(group):
            if not replies[index]:
                replies[index] = finished.ids[position]
    return replies


def measure_form(
    form: str, reference: Reference, prompts: list[list[int]], ref_replies: list[list[int]],
    ref_logprobs: list[torch.Tensor], fact_prompts: list[list[int]], facts_fp32: int, tokens: int,
) -> FormReport:
    engine = Engine(load_model("bundled", cache_dir=CACHE_DIR, device=str(reference.model.device.type)), weights=form)
    engine.start()
    try:
        # 1. Teacher-forced through prefill and the 16-row batched decode.
        forced: list[torch.Tensor] = []
        for start in range(0, len(prompts), BATCH):
            forced += teacher_forced_logprobs(engine, prompts[start : start + BATCH], ref_replies[start : start + BATCH])
        agreement = compare(ref_logprobs, forced)
        del forced
        # 2. Free-running, one chat at a time.
        greedy = SamplingParams(max_new_tokens=tokens, temperature=0)
        started, before = time.perf_counter(), engine.tokens_generated
        alone = engine_alone(engine, prompts, greedy, f"{form}-alone")
        rate = (engine.tokens_generated - before) / (time.perf_counter() - started)
        differences = [first_difference(a, r, tokens) for a, r in zip(alone, ref_replies, strict=True)]
        identical = sum(a[:tokens] == r[:tokens] for a, r in zip(alone, ref_replies, strict=True))
        # 3. Facts.
        fact_params = SamplingParams(max_new_tokens=FACT_TOKENS, temperature=0)
        answers = engine_alone(engine, fact_prompts, fact_params, f"{form}-fact")
        facts = sum(fact_correct(reference.text(a), accepted) for a, (_, accepted) in zip(answers, FACTS, strict=True))
        # 4. Batch invariance, greedy and seeded.
        together = engine_together(engine, prompts, greedy, f"{form}-together")
        greedy_same = sum(a == t for a, t in zip(alone, together, strict=True)) / len(prompts)
        seeded_prompts = prompts[: BATCH + 1]
        seeded = SamplingParams(max_new_tokens=tokens, temperature=0.7, seed=1234)
        seeded_alone = engine_alone(engine, seeded_prompts, seeded, f"{form}-seeded")
        seeded_together = engine_together(engine, seeded_prompts, seeded, f"{form}-seeded-together")
        seeded_same = sum(a == t for a, t in zip(seeded_alone, seeded_together, strict=True)) / len(seeded_prompts)
        return FormReport(
            form=form,
            served_as=engine.weights,
            top1=round(agreement.top1, 4),
            mean_kl=round(agreement.mean_kl, 5),
            max_kl=round(agreement.max_kl, 3),
            positions=agreement.positions,
            identical_share=round(identical / len(prompts), 3),
            first_difference=round(sum(differences) / len(differences), 1),
            facts=facts,
            facts_fp32=facts_fp32,
            greedy_invariant=round(greedy_same, 3),
            seeded_invariant=round(seeded_same, 3),
            decode_tokens_per_second=round(rate, 1),
            meets_bar=meets_bar(agreement, facts, facts_fp32, greedy_same, seeded_same),
        )
    finally:
        engine.shutdown()


def run(forms: list[str], *, chats: int, tokens: int, device: str = "cpu") -> dict[str, Any]:
    reference = Reference(tokens, device=device)
    prompts = [chat_ids(reference.tokenizer, chat) for chat in CHATS[:chats]]
    ref_replies = [reference.greedy(p, tokens) for p in prompts]
    ref_logprobs = [reference.logprobs(p, r) for p, r in zip(prompts, ref_replies, strict=True)]
    fact_prompts = [chat_ids(reference.tokenizer, fact_chat(q)) for q, _ in FACTS]
    fact_answers = [reference.text(reference.greedy(p, FACT_TOKENS)) for p in fact_prompts]
    facts_fp32 = sum(fact_correct(a, accepted) for a, (_, accepted) in zip(fact_answers, FACTS, strict=True))
    reports = [
        measure_form(f, reference, prompts, ref_replies, ref_logprobs, fact_prompts, facts_fp32, tokens) for f in forms
    ]
    return {
        "machine": machine(),
        "chats": len(prompts),
        "tokens": tokens,
        "facts_asked": len(FACTS),
        "facts_fp32": facts_fp32,
        "forms": [asdict(r) for r in reports],
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['chats']} chats x {report['tokens']} tokens; fp32 answers {report['facts_fp32']}/{report['facts_asked']} facts")
    header = "form        served   top-1   mean KL  max KL  same-32  1st diff  facts  greedy-inv  seeded-inv  tok/s  bar"
    print(header)
    for r in report["forms"]:
        print(
            f"{r['form']:<11} {r['served_as']:<8} {r['top1']:.3f}  {r['mean_kl']:.5f}  {r['max_kl']:6.2f}  "
            f"{r['identical_share']:7.2f}  {r['first_difference']:8.1f}  {r['facts']:>2}/{report['facts_asked']}  "
            f"{r['greedy_invariant']:10.2f}  {r['seeded_invariant']:10.2f}  {r['decode_tokens_per_second']:5.1f}  "
            f"{'meets' if r['meets_bar'] else 'misses'}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32 chats x 16 tokens")
    parser.add_argument("--forms", default=",".join(m for m in WEIGHT_MODES if m != "auto"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    report = run(forms, chats=32 if args.quick else len(CHATS), tokens=16 if args.quick else 32, device=args.device)
    print_table(report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
