"""Prefix reuse: a follow-up turn only prefills its new tokens and says the same thing."""

from __future__ import annotations

import torch

from inference.engine.kvcache import PrefixCache
from inference.engine.scheduler import generate_text
from inference.engine.types import GenerationRequest, SamplingParams

GREEDY = SamplingParams(max_new_tokens=20, temperature=0)


def conversation(engine, cache_key: str | None, prefix: str):
    tokenizer = engine.tokenizer
    first_prompt = list(tokenizer.encode("<|im_start|>user\nHi there, who are you?<|im_end|>\n<|im_start|>assistant\n"))
    _, first = generate_text(engine, GenerationRequest(f"{prefix}-1", first_prompt, GREEDY, cache_key=cache_key))
    follow_up = (
        first_prompt + list(first.completion_ids) + list(tokenizer.encode("\n<|im_start|>user\nAnd then?<|im_end|>\n"))
    )
    _, second = generate_text(engine, GenerationRequest(f"{prefix}-2", follow_up, GREEDY, cache_key=cache_key))
    return first, second, follow_up


def test_a_follow_up_turn_reuses_the_cached_prefix_and_gives_the_same_tokens(make_engine):
    engine = make_engine()
    _, cold, _ = conversation(engine, None, "cold")
    first, warm, _follow_up = conversation(engine, "conv-1", "warm")
    assert cold.reused_prompt_tokens == 0
    expected_reuse = first.prompt_tokens + first.completion_tokens - 1
    assert warm.reused_prompt_tokens == expected_reuse
    assert warm.completion_ids == cold.completion_ids
    assert engine.stats()["cached_prefixes"] == 1


def test_a_diverging_prompt_reuses_only_the_common_prefix(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode("The same system prompt. Then the user says one thing"))
    generate_text(engine, GenerationRequest("a", prompt, GREEDY, cache_key="k"))
    other = prompt[:20] + list(engine.tokenizer.encode(" and something else entirely"))
    _, reused = generate_text(engine, GenerationRequest("b", other, GREEDY, cache_key="k"))
    _, fresh = generate_text(engine, GenerationRequest("c", other, GREEDY))
    assert reused.reused_prompt_tokens == 20
    assert reused.completion_ids == fresh.completion_ids


def test_prefix_of_another_adapter_is_not_reused():
    cache = PrefixCache(10_000)
    layer = [(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2))]
    cache.put("k", [1, 2, 3, 4], "style-a", layer)
    assert cache.lookup("k", [1, 2, 3, 4, 5], "style-b") is None
    hit = cache.lookup("k", [1, 2, 3, 4, 5], "style-a")
    assert hit is not None and hit[0] == 4


def test_the_prefix_cache_is_bounded_and_evicts_the_least_recently_used():
    entry = [(torch.zeros(1, 100, 4), torch.zeros(1, 100, 4))]  # 3,200 bytes
    cache = PrefixCache(7_000)
    cache.put("a", list(range(100)), None, entry)
    cache.put("b", list(range(100)), None, entry)
    assert cache.lookup("a", list(range(101)), None) is not None  # "a" is now the most recent
    cache.put("c", list(range(100)), None, entry)
    assert len(cache) == 2 and cache.nbytes <= 7_000
    assert cache.lookup("b", list(range(101)), None) is None
    assert cache.lookup("a", list(range(101)), None) is not None
    assert not cache.put("huge", list(range(1000)), None, [(torch.zeros(1, 1000, 4), torch.zeros(1, 1000, 4))])


def test_an_engine_with_no_prefix_budget_still_answers(make_engine):
    engine = make_engine(prefix_cache_bytes=0)
    _, cold, _ = conversation(engine, None, "cold")
    _, warm, _ = conversation(engine, "conv", "warm")
    assert warm.reused_prompt_tokens == 0
    assert warm.completion_ids == cold.completion_ids
