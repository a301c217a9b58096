"""Log probabilities: the model's own distribution, one entry per generated token, and
nothing for requests that do not ask."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from inference.engine.detokenize import TokenPieces
from inference.engine.types import GenerationRequest, SamplingParams, TokenEvent, TokenLogprob
from tests.tiny_model import build_byte_tokenizer

from .conftest import BUNDLED_CACHE, Collector, prompt_ids, submit
from .test_sampling import TEXTS

PROMPT = "Tell me a story about a dragon who learned to cook."
CLOSE = 1e-4


def entries_of(collector: Collector) -> list[TokenLogprob]:
    return [entry for event in collector.events if isinstance(event, TokenEvent) for entry in event.logprobs]


def model_logprobs(engine, ids: list[int]) -> torch.Tensor:
    """log_softmax of transformers' own forward over ``ids``: ``[positions, vocab]``."""
    with torch.inference_mode():
        logits = engine.model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def test_each_tokens_logprob_is_the_models_own_before_temperature_and_penalties(make_engine):
    engine = make_engine()
    prompt = prompt_ids(engine, PROMPT)
    params = SamplingParams(
        max_new_tokens=12, temperature=1.7, top_p=0.6, seed=5, presence_penalty=1.5, ignore_eos=True, logprobs=3
    )
    collector = submit(engine, GenerationRequest("own", prompt, params))
    reply = list(collector.wait().completion_ids)
    entries = entries_of(collector)
    assert [entry.token_id for entry in entries] == reply
    reference = model_logprobs(engine, prompt + reply[:-1])[len(prompt) - 1 :]
    expected = reference.gather(1, torch.tensor(reply)[:, None])[:, 0].tolist()
    assert entries[0].logprob == pytest.approx(expected[0], abs=CLOSE)
    assert [entry.logprob for entry in entries] == pytest.approx(expected, abs=CLOSE)
    top_values, top_ids = torch.topk(reference[0], 3)
    assert [alt.token_id for alt in entries[0].top] == top_ids.tolist()
    assert [alt.logprob for alt in entries[0].top] == pytest.approx(top_values.tolist(), abs=CLOSE)


def test_a_full_vocabulary_of_alternatives_sums_to_one(make_engine):
    engine = make_engine()
    params = SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True, logprobs=engine.vocab_size)
    collector = submit(engine, GenerationRequest("whole", prompt_ids(engine, PROMPT), params))
    collector.wait()
    for entry in entries_of(collector):
        values = [alt.logprob for alt in entry.top]
        assert len(values) == engine.vocab_size
        assert values == sorted(values, reverse=True)
        assert math.fsum(math.exp(value) for value in values) == pytest.approx(1.0, abs=CLOSE)
        assert entry.top[0].token_id == entry.token_id, "greedy picks the most likely token"
        assert entry.logprob == entry.top[0].logprob <= 0


def test_every_token_has_an_entry_even_while_its_text_is_held_back(make_engine):
    engine = make_engine()
    # The tiny model's tokens are single bytes and its random weights write stray ones:
    # the detokenizer holds back pieces of characters, and the eos token ends nothing.
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=3, ignore_eos=True, logprobs=0)
    collector = submit(engine, GenerationRequest("bytes", prompt_ids(engine, PROMPT), params))
    finish = collector.wait()
    entries = entries_of(collector)
    events = [event for event in collector.events if isinstance(event, TokenEvent)]
    assert any(len(event.logprobs) > 1 for event in events), "some text was held back for a later event"
    assert [entry.token_id for entry in entries] == list(finish.completion_ids)
    assert len(entries) == finish.completion_tokens == 40
    for entry in entries:
        assert entry.top == ()
        assert entry.piece == engine.pieces.get(entry.token_id)[1]
        assert entry.logprob <= 0


def test_requests_that_do_not_ask_get_no_entries_and_the_same_tokens(make_engine):
    engine = make_engine()
    prompt = prompt_ids(engine, PROMPT)
    greedy = SamplingParams(max_new_tokens=10, temperature=0, ignore_eos=True)
    plain = submit(engine, GenerationRequest("plain", prompt, greedy))
    asking = submit(engine, GenerationRequest("asking", prompt, replace(greedy, logprobs=2)))
    assert plain.wait().completion_ids == asking.wait().completion_ids
    assert entries_of(plain) == []
    assert len(entries_of(asking)) == 10


def test_too_many_alternatives_is_a_readable_error(make_engine):
    engine = make_engine()
    params = SamplingParams(max_new_tokens=3, logprobs=engine.vocab_size + 1)
    finish = submit(engine, GenerationRequest("many", [40], params)).wait()
    assert finish.finish_reason == "error" and "logprobs" in (finish.error or "")


def assert_pieces_join_up_to_the_text(tokenizer, text: str) -> None:
    pieces = TokenPieces(tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(pieces.get(token)[1] for token in ids) == text.encode()


@pytest.mark.parametrize("text", TEXTS)
def test_token_pieces_are_exact_bytes(text):
    assert_pieces_join_up_to_the_text(build_byte_tokenizer(), text)


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_token_pieces_are_exact_bytes_with_the_bundled_tokenizer(text):
    from transformers import AutoTokenizer

    from inference.engine.loading import convert_bundled_to_cache

    tokenizer = AutoTokenizer.from_pretrained(convert_bundled_to_cache(BUNDLED_CACHE))
    assert_pieces_join_up_to_the_text(tokenizer, text)
    pieces = TokenPieces(tokenizer)
    assert pieces.get(tokenizer.convert_tokens_to_ids("<|im_end|>")) == ("<|im_end|>", b"<|im_end|>")


def test_sentencepiece_tokens_read_spaces_and_lone_bytes():
    class SentencePieceNames:
        added_tokens_decoder = {0: "<s>"}

        def convert_ids_to_tokens(self, token_id: int) -> str:
            return ["<s>", "\u2581hello", "<0xE4>", "<0xBD>", "<0xA0>"][token_id]

    pieces = TokenPieces(SentencePieceNames())
    assert [pieces.get(token) for token in range(5)] == [
        ("<s>", b"<s>"),
        (" hello", b" hello"),
        ("\\xe4", b"\xe4"),
        ("\\xbd", b"\xbd"),
        ("\\xa0", b"\xa0"),
    ]
