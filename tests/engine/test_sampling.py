"""Sampling, seeds, incremental detokenization and stop strings."""

from __future__ import annotations

import pytest
import torch

from inference.engine.detokenize import IncrementalDetokenizer, StopFilter
from inference.engine.sampling import make_generator, sample_batch, sample_row
from inference.engine.scheduler import generate_text
from inference.engine.types import GenerationRequest, SamplingParams
from tests.tiny_model import build_byte_tokenizer

from .conftest import BUNDLED_CACHE, submit

PROMPT = "Once upon a time"


def sampled(seed: int | None, n: int = 24, **kwargs) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=1.0, seed=seed, **kwargs)


def test_the_same_seed_gives_the_same_output_whatever_shares_the_batch(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPT))
    _, alone = generate_text(engine, GenerationRequest("s-alone", prompt, sampled(7)))
    neighbours = [submit(engine, GenerationRequest(f"n{i}", prompt[: i + 2], sampled(None, 40))) for i in range(5)]
    together = submit(engine, GenerationRequest("s-batch", prompt, sampled(7)))
    assert together.wait().completion_ids == alone.completion_ids
    for neighbour in neighbours:
        neighbour.wait()


def test_different_seeds_give_different_outputs(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPT))
    outputs = {
        generate_text(engine, GenerationRequest(f"d{s}", prompt, sampled(s)))[1].completion_ids for s in range(4)
    }
    assert len(outputs) > 1


def test_tiny_top_p_is_greedy(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPT))
    greedy = generate_text(engine, GenerationRequest("g", prompt, SamplingParams(max_new_tokens=16, temperature=0)))
    nucleus = generate_text(engine, GenerationRequest("p", prompt, sampled(3, 16, top_p=1e-6)))
    assert nucleus[1].completion_ids == greedy[1].completion_ids


def test_sample_row_respects_top_p():
    logits = torch.tensor([5.0, 4.9, -10.0, -10.0])
    params = SamplingParams(temperature=1.0, top_p=0.9)
    generator = make_generator(0)
    draws = {sample_row(logits, params, generator) for _ in range(200)}
    assert draws == {0, 1}


GREEDY = SamplingParams(temperature=0.0)


def test_frequency_penalty_counts_every_repeat_and_presence_penalty_counts_once():
    logits = torch.tensor([[0.0, 3.0, 2.25, 0.0]])
    before = logits.clone()
    frequency = SamplingParams(temperature=0.0, frequency_penalty=0.5)
    presence = SamplingParams(temperature=0.0, presence_penalty=0.5)
    gen = make_generator(0)
    assert sample_batch(logits, [frequency], [gen], [[1]]) == [1], "3.0 - 0.5 still beats 2.25"
    assert sample_batch(logits, [frequency], [gen], [[1, 1]]) == [2], "3.0 - 2 x 0.5 loses to 2.25"
    assert sample_batch(logits, [presence], [gen], [[1, 1, 1]]) == [1], "presence lowers it once: 2.5"
    assert sample_batch(logits, [GREEDY], [gen], [[1, 1, 1]]) == [1], "no penalty, no change"
    assert torch.equal(logits, before), "the caller's logits are left alone"


def test_penalties_apply_to_their_own_row_only():
    logits = torch.tensor([[0.0, 3.0, 2.2], [0.0, 3.0, 2.2]])
    penalized = SamplingParams(temperature=0.0, frequency_penalty=2.0)
    gens = [make_generator(0), make_generator(0)]
    assert sample_batch(logits, [penalized, GREEDY], gens, [[1], [1, 1]]) == [2, 1]


def test_a_penalized_reply_is_the_same_alone_and_in_a_batch(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPT))
    params = SamplingParams(max_new_tokens=40, temperature=0.0, frequency_penalty=1.0, presence_penalty=0.5)
    plain = generate_text(engine, GenerationRequest("plain", prompt, SamplingParams(40, 0.0, ignore_eos=True)))[1]
    alone = generate_text(engine, GenerationRequest("alone", prompt, params))[1]
    neighbours = [submit(engine, GenerationRequest(f"n{i}", prompt[: i + 2], sampled(None, 40))) for i in range(5)]
    together = submit(engine, GenerationRequest("together", prompt, params))
    assert together.wait().completion_ids == alone.completion_ids
    for neighbour in neighbours:
        neighbour.wait()
    assert alone.completion_ids != plain.completion_ids[: len(alone.completion_ids)], "the penalty changed the reply"
    repeats = len(alone.completion_ids) - len(set(alone.completion_ids))
    plain_repeats = len(plain.completion_ids) - len(set(plain.completion_ids))
    assert repeats < plain_repeats, (alone.completion_ids, plain.completion_ids)


def assert_deltas_join_to_full_decode(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer, tokenizer.encode("Prompt: ", add_special_tokens=False))
    deltas = [detokenizer.push(token) for token in ids]
    deltas.append(detokenizer.flush())
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in delta for delta in deltas)


TEXTS = ["héllo wörld, 世界 🙂 done", "  two  spaces\nnew line\ttab", "emoji at the end 🎉🎉"]


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenization_never_splits_a_character(text):
    assert_deltas_join_to_full_decode(build_byte_tokenizer(), text)


@pytest.mark.slow
@pytest.mark.parametrize("text", [*TEXTS, "The answer is 42. Don't panic!"])
def test_incremental_detokenization_with_the_bundled_tokenizer(text):
    from transformers import AutoTokenizer

    from inference.engine.loading import convert_bundled_to_cache

    tokenizer = AutoTokenizer.from_pretrained(convert_bundled_to_cache(BUNDLED_CACHE))
    assert_deltas_join_to_full_decode(tokenizer, text)


def test_stop_filter_finds_a_stop_string_across_deltas():
    stops = StopFilter(("STOP",))
    shown = [stops.feed(part) for part in ["Hel", "lo ST", "OP and more"]]
    assert "".join(shown) == "Hello "
    assert stops.stopped
    assert shown[1] == "lo "  # "ST" was held back while it could still become "STOP"


def test_stop_filter_releases_held_text_that_was_not_a_stop():
    stops = StopFilter(("STOP", "\n\nUser:"))
    assert stops.feed("a S") == "a "
    assert stops.feed("x\n") == "Sx"
    assert stops.finish() == "\n"
    assert not stops.stopped


def test_engine_excludes_stop_strings_across_token_boundaries(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode("A stop test"))
    greedy = SamplingParams(max_new_tokens=40, temperature=0)
    full, _ = generate_text(engine, GenerationRequest("full", prompt, greedy))
    clean = full.replace("\ufffd", "")
    stop = clean[len(clean) // 2 : len(clean) // 2 + 3]
    assert len(stop) == 3
    stopped = SamplingParams(max_new_tokens=40, temperature=0, stop=("never-seen", stop))
    text, finish = generate_text(engine, GenerationRequest("stopped", prompt, stopped))
    assert finish.finish_reason == "stop"
    assert text == full[: full.index(stop)]
