"""The scheduler: batching, joining and leaving, cancelling, limits, failures."""

from __future__ import annotations

import time

import torch

from inference.engine.scheduler import generate_text
from inference.engine.types import GenerationRequest, SamplingParams, TokenEvent

from .conftest import ENDLESS, submit

PROMPTS = [
    "Hello!",
    "Tell me a story about a dragon who learned to cook.",
    "2 + 2 =",
    "The quick brown fox jumps over the lazy dog, again and again, until it tires.",
    "Bonjour à tous, ça va ? 你好",
    "x",
]


def greedy(max_new_tokens: int = 24, **kwargs) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0, **kwargs)


def alone(engine, prompt: list[int], params: SamplingParams) -> tuple[int, ...]:
    _, finish = generate_text(engine, GenerationRequest(f"alone-{time.monotonic_ns()}", prompt, params))
    return finish.completion_ids


def test_one_stream_matches_transformers_generate(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPTS[1]))
    ids = alone(engine, prompt, greedy(20))
    reference = engine.model.generate(
        torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert list(ids) == reference[: len(ids)]
    assert len(ids) == 20 or ids[-1] in engine.eos_token_ids


def test_batched_outputs_equal_one_at_a_time(make_engine):
    engine = make_engine()
    prompts = [list(engine.tokenizer.encode(p)) for p in PROMPTS]
    expected = [alone(engine, p, greedy()) for p in prompts]
    collectors = [submit(engine, GenerationRequest(f"b{i}", p, greedy())) for i, p in enumerate(prompts)]
    got = [c.wait().completion_ids for c in collectors]
    assert got == expected
    assert engine.stats()["steps"] > 0


def test_requests_join_and_leave_mid_flight(make_engine):
    engine = make_engine(prefill_chunk_tokens=8)
    prompts = [list(engine.tokenizer.encode(p)) for p in PROMPTS]
    lengths = [5, 30, 12, 40, 3, 20]
    expected = [alone(engine, p, greedy(n)) for p, n in zip(prompts, lengths)]
    collectors = {}

    def submit_later(index: int):
        collectors[index] = submit(engine, GenerationRequest(f"j{index}", prompts[index], greedy(lengths[index])))

    submit_later(0)
    submit_later(1)
    # Newcomers arrive one by one, each once the one before is decoding; short ones leave early.
    for index in range(2, len(prompts)):
        assert collectors[index - 1].started.wait(30), f"request {index - 1} never started"
        submit_later(index)
    got = [collectors[i].wait().completion_ids for i in range(len(prompts))]
    assert got == expected


def test_long_prompts_prefilled_in_chunks_give_the_same_tokens(make_engine):
    whole = make_engine(prefill_chunk_tokens=256)
    chunked = make_engine(prefill_chunk_tokens=7)
    prompt = list(whole.tokenizer.encode(" ".join(PROMPTS) * 3))
    assert alone(chunked, prompt, greedy(16)) == alone(whole, prompt, greedy(16))


def test_cancel_ends_a_running_request_within_a_step(make_engine, long_context_dir):
    engine = make_engine(model_dir=long_context_dir)
    prompt = list(engine.tokenizer.encode(PROMPTS[0]))
    collector = submit(engine, GenerationRequest("c1", prompt, ENDLESS))
    assert collector.started.wait(30)
    engine.cancel("c1")
    generated_by_then = engine.stats()["tokens_generated"]
    finish = collector.wait()
    assert finish.finish_reason == "cancelled"
    assert finish.completion_tokens <= generated_by_then + 1, "at most the step under way finishes"
    assert engine.stats()["active_streams"] == 0


def test_cancel_of_a_queued_request(make_engine):
    engine = make_engine(max_batch_size=1)
    prompt = list(engine.tokenizer.encode(PROMPTS[0]))
    first = submit(engine, GenerationRequest("q1", prompt, greedy(200)))
    second = submit(engine, GenerationRequest("q2", prompt, greedy(200)))
    engine.cancel("q2")
    assert second.wait().finish_reason == "cancelled"
    assert second.finish.completion_tokens == 0
    engine.cancel("q1")
    assert first.wait().finish_reason == "cancelled"


def test_max_new_tokens_gives_length_and_timings(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPTS[2]))
    text, finish = generate_text(engine, GenerationRequest("l1", prompt, greedy(7)))
    assert finish.finish_reason in ("length", "stop")
    assert finish.completion_tokens == len(finish.completion_ids) <= 7
    assert finish.prompt_tokens == len(prompt)
    assert finish.queue_seconds is not None and finish.first_token_seconds is not None
    assert finish.decode_seconds is not None
    assert text == engine.tokenizer.decode(list(finish.completion_ids), skip_special_tokens=True)


def test_eos_token_stops_the_stream(make_engine):
    engine = make_engine()
    prompt = list(engine.tokenizer.encode(PROMPTS[3]))
    reference = alone(engine, prompt, greedy(10))
    engine.eos_token_ids = frozenset({reference[3]})
    _, finish = generate_text(engine, GenerationRequest("e1", prompt, greedy(10)))
    assert finish.finish_reason == "stop"
    assert finish.completion_ids == reference[: reference.index(reference[3]) + 1]


def test_full_context_window_finishes_with_length(make_engine):
    engine = make_engine()
    prompt = [40] * (engine.context_length - 5)
    _, finish = generate_text(engine, GenerationRequest("w1", prompt, greedy(50)))
    assert finish.finish_reason in ("length", "stop")
    assert len(prompt) + finish.completion_tokens <= engine.context_length


def test_bad_requests_get_a_readable_error_and_the_engine_keeps_serving(make_engine):
    engine = make_engine()
    too_long = [40] * engine.context_length
    cases = {
        "empty": ([], greedy()),
        "long": (too_long, greedy()),
        "vocab": ([10**9], greedy()),
        "temperature": ([40], SamplingParams(temperature=-1)),
    }
    for name, (prompt, params) in cases.items():
        _, finish = generate_text(engine, GenerationRequest(name, prompt, params))
        assert finish.finish_reason == "error", name
        assert finish.error and finish.error.endswith("."), name
    _, finish = generate_text(engine, GenerationRequest("ok", [40, 41], greedy(3, ignore_eos=True)))
    assert finish.finish_reason == "length"


def test_unknown_adapter_is_an_error(make_engine):
    engine = make_engine()
    _, finish = generate_text(engine, GenerationRequest("a1", [40], greedy(), adapter="nope"))
    assert finish.finish_reason == "error" and "nope" in finish.error


def test_a_callback_that_raises_does_not_stop_the_engine(make_engine):
    engine = make_engine()

    def explode(event):
        raise RuntimeError("caller bug")

    engine.submit(GenerationRequest("boom", [40, 41, 42], greedy(5)), explode)
    _, finish = generate_text(engine, GenerationRequest("after", [40, 41], greedy(5, ignore_eos=True)))
    assert finish.finish_reason == "length"


def test_a_crash_in_the_step_ends_affected_requests_with_error(make_engine):
    engine = make_engine()
    prompt = [40, 41, 42]
    expected = alone(engine, prompt, greedy(5))
    real_forward = engine.model.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated kernel failure")
        return real_forward(*args, **kwargs)

    engine.model.forward = flaky
    _, finish = generate_text(engine, GenerationRequest("crash", prompt, greedy(20)))
    assert finish.finish_reason == "error"
    assert "simulated kernel failure" in finish.error
    assert alone(engine, prompt, greedy(5)) == expected


def test_exactly_one_finish_event_per_request(make_engine):
    engine = make_engine(max_batch_size=2)
    collectors = [submit(engine, GenerationRequest(f"f{i}", [40 + i], greedy(8))) for i in range(5)]
    engine.cancel("f4")
    for collector in collectors:
        collector.wait()
        assert collector.finish  # exactly one
    engine.shutdown()  # joins the model thread: nothing can arrive after this
    assert all(len([e for e in c.events if not isinstance(e, TokenEvent)]) == 1 for c in collectors)


def test_shutdown_finishes_requests_in_flight(make_engine, long_context_dir):
    engine = make_engine(model_dir=long_context_dir)
    collector = submit(engine, GenerationRequest("s1", [40], ENDLESS))
    assert collector.started.wait(30)
    engine.shutdown()
    assert collector.wait().finish_reason == "cancelled"
    _, finish = generate_text(engine, GenerationRequest("s2", [40], greedy()))
    assert finish.finish_reason == "error"


def test_duplicate_request_ids_are_refused(make_engine, long_context_dir):
    engine = make_engine(model_dir=long_context_dir)
    first = submit(engine, GenerationRequest("dup", [40], ENDLESS))
    second = submit(engine, GenerationRequest("dup", [40], greedy(3)))
    assert second.wait().finish_reason == "error"
    engine.cancel("dup")
    assert first.wait().finish_reason == "cancelled"


def test_shutdown_for_a_model_that_went_away_ends_requests_with_its_reason(make_engine, long_context_dir):
    engine = make_engine(model_dir=long_context_dir)
    collector = submit(engine, GenerationRequest("gone", [40], ENDLESS))
    assert collector.started.wait(30)
    engine.shutdown(error="The model was deleted.")
    finish = collector.wait()
    assert (finish.finish_reason, finish.error) == ("error", "The model was deleted.")
