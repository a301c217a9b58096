"""Fine-tuning data: every rejection with its line, good files in all formats, sizes.

Run alone with ``.venv/bin/python -m pytest tests/engine/test_datasets.py -q``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from inference.engine.datasets import (
    DatasetProblem,
    Example,
    Hyperparameters,
    Message,
    dataset_stats,
    dump_jsonl,
    parse_dataset,
    resolve_hyperparameters,
    split_note,
    split_validation,
)
from tests.tiny_model import build_byte_tokenizer

GOOD_PAIR = '{"prompt": "What is 2+2?", "completion": "4"}'
GOOD_CHAT = json.dumps(
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
)


def chat_line(*messages: object) -> str:
    return json.dumps({"messages": list(messages)})


@dataclass(frozen=True)
class Case:
    name: str
    lines: tuple[str, ...]
    line: int | None
    reason: str
    format: str = "auto"


REJECTIONS = [
    Case(
        "not JSON",
        (GOOD_PAIR, "{prompt: hi}"),
        2,
        "not valid JSON (Expecting property name enclosed in double quotes)",
    ),
    Case(
        "truncated JSON",
        (GOOD_PAIR, '{"prompt": "a", "completion": "b"'),
        2,
        "not valid JSON (Expecting ',' delimiter)",
    ),
    Case("not an object: list", (GOOD_PAIR, '["a", "b"]'), 2, "not a JSON object (found a list)"),
    Case("not an object: string", ('"hello"', GOOD_PAIR), 1, "not a JSON object (found a string)"),
    Case("not an object: number", (GOOD_PAIR, "42"), 2, "not a JSON object (found a number)"),
    Case("no known field", (GOOD_PAIR, '{"text": "hi"}'), 2, 'missing field "prompt"'),
    Case(
        "no known field, nothing settled",
        ('{"text": "hi"}', GOOD_PAIR),
        1,
        'missing field "messages" (or "prompt" and "completion")',
    ),
    Case("missing completion", (GOOD_PAIR, '{"prompt": "hi"}'), 2, 'missing field "completion"'),
    Case("missing prompt", (GOOD_PAIR, '{"completion": "hi"}'), 2, 'missing field "prompt"'),
    Case(
        "empty prompt",
        (GOOD_PAIR, '{"prompt": "  ", "completion": "x"}'),
        2,
        'empty field "prompt"',
    ),
    Case(
        "empty completion",
        ('{"prompt": "p", "completion": ""}', GOOD_PAIR),
        1,
        'empty field "completion"',
    ),
    Case(
        "prompt of the wrong type",
        (GOOD_PAIR, '{"prompt": 3, "completion": "x"}'),
        2,
        'field "prompt" must be a string, not a number',
    ),
    Case(
        "completion null",
        (GOOD_PAIR, '{"prompt": "p", "completion": null}'),
        2,
        'field "completion" must be a string, not null',
    ),
    Case(
        "both formats in one line",
        ('{"prompt": "p", "completion": "c", "messages": []}',),
        1,
        'has both "messages" and "prompt"/"completion"; use one format',
    ),
    Case(
        "chat in a prompt/completion file",
        (GOOD_PAIR, GOOD_PAIR.replace("4", "5"), GOOD_CHAT),
        3,
        "a chat example in a prompt/completion file (line 1 is a prompt/completion example)",
    ),
    Case(
        "prompt/completion in a chat file",
        ("", GOOD_CHAT, GOOD_PAIR),
        3,
        "a prompt/completion example in a chat file (line 2 is a chat example)",
    ),
    Case(
        "prompt/completion when chat is named",
        (GOOD_PAIR,),
        1,
        "a prompt/completion example in a chat file",
        "chat",
    ),
    Case(
        "messages not a list",
        (GOOD_CHAT, '{"messages": "hi"}'),
        2,
        'field "messages" must be a list, not a string',
    ),
    Case("messages empty", (GOOD_CHAT, '{"messages": []}'), 2, 'empty field "messages"'),
    Case(
        "message not an object",
        (GOOD_CHAT, chat_line("hi")),
        2,
        "message 1 is not a JSON object (found a string)",
    ),
    Case(
        "message without a role",
        (GOOD_CHAT, chat_line({"role": "user", "content": "a"}, {"content": "b"})),
        2,
        'message 2: missing field "role"',
    ),
    Case(
        "message without content",
        (GOOD_CHAT, chat_line({"role": "user"})),
        2,
        'message 1: missing field "content"',
    ),
    Case(
        "message with empty content",
        (
            GOOD_CHAT,
            chat_line({"role": "user", "content": "a"}, {"role": "assistant", "content": " "}),
        ),
        2,
        'message 2: empty field "content"',
    ),
    Case(
        "content of the wrong type",
        (
            GOOD_CHAT,
            chat_line({"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}),
        ),
        2,
        'message 1: field "content" must be a string, not a list',
    ),
    Case(
        "role of the wrong type",
        (GOOD_CHAT, chat_line({"role": True, "content": "a"})),
        2,
        'message 1: field "role" must be a string, not true/false',
    ),
    Case(
        "unknown role",
        (GOOD_CHAT, chat_line({"role": "user", "content": "a"}, {"role": "bot", "content": "b"})),
        2,
        'message 2: unknown role "bot" (use system, user or assistant)',
    ),
    Case(
        "no assistant message",
        (
            GOOD_CHAT,
            chat_line({"role": "system", "content": "a"}, {"role": "user", "content": "b"}),
        ),
        2,
        "no assistant message",
    ),
    Case(
        "duplicate",
        (GOOD_PAIR, GOOD_PAIR.replace("4", "four"), "", GOOD_PAIR),
        4,
        "duplicate of line 1",
    ),
    Case(
        "duplicate after normalizing",
        ('{"prompt": "hi", "completion": "x"}', '{"prompt": " hi ", "completion": "x\\n"}'),
        2,
        "duplicate of line 1",
        "prompt_completion",
    ),
    Case(
        "CSV empty field", ("prompt,completion", "a,b", "", '"c",'), 4, 'empty field "completion"'
    ),
    Case(
        "CSV missing field", ("prompt,completion", "a,b", "only"), 3, 'missing field "completion"'
    ),
    Case(
        "CSV extra field",
        ("prompt,completion", "a,b", "c,d,e"),
        3,
        "has 3 fields; the header has 2",
    ),
    Case(
        "CSV duplicate", ("prompt,completion", "a,b", '"x\ny",z', "a,b"), 5, "duplicate of line 2"
    ),
    Case(
        "CSV missing column",
        ("question,completion", "a,b"),
        1,
        'missing column "prompt" (the header has: question, completion)',
        "csv",
    ),
    Case(
        "CSV missing completion column",
        ("", "Prompt;answer", "a;b"),
        2,
        'missing column "completion" (the header has: prompt, answer)',
    ),
    Case("no examples", ("", "  ", ""), None, "The file has no examples."),
    Case("CSV with a header only", ("prompt,completion",), None, "The file has no examples."),
]


@pytest.mark.parametrize("case", REJECTIONS, ids=[case.name for case in REJECTIONS])
def test_it_rejects_each_problem_with_its_line_and_reason(case: Case) -> None:
    data = "\n".join(case.lines).encode() + b"\n"
    parsed = parse_dataset(data, format=case.format)
    assert parsed.errors == [DatasetProblem(case.line, case.reason)]
    assert not parsed.ok


def test_it_reports_bytes_that_are_not_utf8_on_their_line() -> None:
    data = GOOD_PAIR.encode() + b'\n{"prompt": "caf\xe9", "completion": "x"}\n'
    parsed = parse_dataset(data)
    assert parsed.errors == [DatasetProblem(2, "not valid UTF-8 text (byte 0xe9 at position 16)")]
    assert len(parsed.examples) == 1


def test_it_reports_bytes_that_are_not_utf8_in_csv() -> None:
    parsed = parse_dataset(b"prompt,completion\na,b\n\xff,c\n")
    assert [str(p) for p in parsed.errors] == [
        "Line 3: not valid UTF-8 text (byte 0xff at position 1)"
    ]


def test_it_names_utf16_files() -> None:
    parsed = parse_dataset("prompt,completion\na,b\n".encode("utf-16"))
    assert [str(p) for p in parsed.errors] == ["The file is UTF-16 text; save it as UTF-8."]


def test_it_rejects_examples_longer_than_the_context() -> None:
    tokenizer = build_byte_tokenizer()
    long_pair = json.dumps({"prompt": "x" * 300, "completion": "y"})
    data = f"{GOOD_PAIR}\n{long_pair}\n".encode()
    parsed = parse_dataset(data, tokenizer=tokenizer, context_length=200)
    # One token per byte, plus 22 for ChatML: 300 + 22.
    assert parsed.errors == [
        DatasetProblem(2, "longer than the model's context (322 tokens; the limit is 200)")
    ]


def test_it_reports_a_chat_template_that_refuses_an_example() -> None:
    tokenizer = build_byte_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System messages are not supported') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    line = chat_line({"role": "system", "content": "s"}, {"role": "assistant", "content": "a"})
    parsed = parse_dataset(f"{GOOD_CHAT}\n{line}\n".encode(), tokenizer=tokenizer)
    assert parsed.errors == [
        DatasetProblem(
            2, "the model's chat template refuses it (System messages are not supported)"
        )
    ]


def test_it_caps_the_error_list_and_counts_the_rest() -> None:
    data = ("not json\n" * 60).encode()
    parsed = parse_dataset(data, max_errors=50)
    assert len(parsed.errors) == 50
    assert parsed.errors[-1].line == 50
    assert parsed.more_errors == 10


def test_it_refuses_a_file_over_the_size_limit() -> None:
    data = (GOOD_PAIR + "\n").encode() * 100
    parsed = parse_dataset(data, max_bytes=2_000)
    assert [str(p) for p in parsed.errors] == ["The file is 4.6 kB; the limit is 2.0 kB."]
    assert parsed.examples == []


def test_it_refuses_too_many_examples() -> None:
    lines = [json.dumps({"prompt": f"q{i}", "completion": "a"}) for i in range(11)]
    parsed = parse_dataset("\n".join(lines).encode(), max_examples=10)
    assert [str(p) for p in parsed.errors] == ["The file has 11 examples; the limit is 10."]
    assert parse_dataset("\n".join(lines[:10]).encode(), max_examples=10).ok


def test_it_reads_prompt_completion_jsonl() -> None:
    data = (
        b'\xef\xbb\xbf{"prompt": " Hi ", "completion": " Hello "}\r\n\r\n'
        + b'{"prompt": "a", "completion": "b", "extra": 1}'
    )
    parsed = parse_dataset(data)
    assert parsed.ok and parsed.format == "prompt_completion"
    assert parsed.examples == [
        Example((Message("user", "Hi"), Message("assistant", "Hello")), line=1),
        Example((Message("user", "a"), Message("assistant", "b")), line=3),
    ]


def test_it_reads_chat_jsonl_verbatim() -> None:
    line = chat_line(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  indented code"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "done"},
    )
    parsed = parse_dataset(f"\n{line}\n".encode())
    assert parsed.ok and parsed.format == "chat"
    example = parsed.examples[0]
    assert example.line == 2
    assert example.chat()[1] == {"role": "user", "content": "  indented code"}
    assert example.prompt_chat()[-1] == {"role": "user", "content": "and?"}
    assert example.expected_answer == "done"


def test_it_reads_csv_with_quoted_multiline_fields() -> None:
    data = b'\n"Prompt","Completion",notes\r\n"two\nlines",yes,\r\n,,\r\nplain,"with, comma",n\r\n'
    parsed = parse_dataset(data)
    assert parsed.ok and parsed.format == "csv"
    assert [(e.line, e.chat()[0]["content"], e.expected_answer) for e in parsed.examples] == [
        (3, "two\nlines", "yes"),
        (6, "plain", "with, comma"),
    ]


def test_it_reads_semicolon_csv_when_named() -> None:
    parsed = parse_dataset(b"prompt;completion\na;b\n", format="csv")
    assert parsed.ok and parsed.examples[0].expected_answer == "b"


def test_it_measures_tokens_and_estimates_the_run() -> None:
    tokenizer = build_byte_tokenizer()
    lines = [json.dumps({"prompt": "q" * n, "completion": "a"}) for n in (1, 5, 10, 20)]
    parsed = parse_dataset(
        "\n".join(lines).encode(),
        tokenizer=tokenizer,
        hyperparameters=Hyperparameters(epochs=2, batch_size=3, learning_rate_multiplier=1.0),
        tokens_per_second=100.0,
    )
    # ChatML adds 21 tokens around a one-byte-per-token prompt and a one-token answer.
    assert parsed.token_counts == [23, 27, 32, 42]
    stats = parsed.stats
    assert (stats.examples, stats.tokens_min, stats.tokens_median, stats.tokens_max) == (
        4,
        23,
        27,
        42,
    )
    assert stats.tokens_total == 124
    assert stats.estimated_steps == 4  # 2 epochs of ceil(4 / 3) steps
    assert stats.estimated_trained_tokens == 248
    assert stats.estimated_seconds == pytest.approx(2.48)


def test_it_gives_stats_without_a_tokenizer() -> None:
    parsed = parse_dataset((GOOD_CHAT + "\n" + GOOD_CHAT.replace("Hi", "Hey")).encode())
    assert parsed.stats.examples == 2
    assert parsed.stats.tokens_total is None and parsed.stats.estimated_seconds is None
    assert parsed.stats.hyperparameters == resolve_hyperparameters(2)


@pytest.mark.parametrize(
    ("n_examples", "expected"),
    [
        (1, Hyperparameters(25, 1, 0.5)),
        (12, Hyperparameters(20, 1, 0.5)),
        (30, Hyperparameters(8, 2, 0.71)),
        (48, Hyperparameters(5, 4, 1.0)),
        (60, Hyperparameters(4, 4, 1.0)),
        (200, Hyperparameters(3, 8, 1.0)),
        (20_000, Hyperparameters(1, 8, 1.0)),
    ],
)
def test_it_resolves_auto_hyperparameters_from_the_size(
    n_examples: int, expected: Hyperparameters
) -> None:
    assert resolve_hyperparameters(n_examples) == expected


def test_it_keeps_hyperparameters_that_are_given() -> None:
    resolved = resolve_hyperparameters(60, epochs=7, batch_size=8, learning_rate_multiplier=0.3)
    assert resolved == Hyperparameters(7, 8, 0.3)


def test_dataset_stats_counts_steps_per_epoch() -> None:
    stats = dataset_stats(None, n_examples=10, hyperparameters=Hyperparameters(3, 4, 1.0))
    assert stats.estimated_steps == 9


def test_it_splits_off_a_seeded_validation_set() -> None:
    examples = [
        Example((Message("user", str(i)), Message("assistant", "a")), i + 1) for i in range(20)
    ]
    train, validation = split_validation(examples, fraction=0.2, seed=7)
    assert len(train) == 16 and len(validation) == 4
    assert set(train).isdisjoint(validation) and set(train) | set(validation) == set(examples)
    assert split_validation(examples, fraction=0.2, seed=7) == (train, validation)
    assert split_validation(examples, fraction=0.2, seed=8) != (train, validation)
    assert split_validation(examples[:1], fraction=0.5) == (examples[:1], [])
    assert len(split_validation(examples, fraction=0.5, max_count=3)[1]) == 3


def test_dumped_examples_read_back_the_same() -> None:
    parsed = parse_dataset(b'prompt,completion\na,b\nc,"d\ne"\n')
    assert len(parsed.examples) == 2
    again = parse_dataset(dump_jsonl(parsed.examples))
    assert [e.messages for e in again.examples] == [e.messages for e in parsed.examples]


def test_the_split_never_holds_out_every_phrasing_of_a_fact() -> None:
    def ask(i: int, answer: str) -> Example:
        return Example((Message("user", f"q{i}"), Message("assistant", answer)), i)

    # 16 facts: 4 asked twice, 12 asked once.
    examples = [ask(i, f"fact {i // 2}") for i in range(8)] + [ask(i, f"single {i}") for i in range(8, 20)]
    for seed in range(10):
        train, validation = split_validation(examples, fraction=0.5, seed=seed)
        trained = {e.expected_answer for e in train}
        assert len(validation) == 4 and all(e.expected_answer in trained for e in validation)
    assert "only from the 4 completions given in more than one phrasing" in split_note(examples, validation)


def test_with_one_phrasing_per_fact_nothing_is_held_out_and_the_job_says_why() -> None:
    examples = [Example((Message("user", f"q{i}"), Message("assistant", f"a{i}")), i) for i in range(1, 30)]
    train, validation = split_validation(examples, fraction=0.2, seed=1)
    assert (train, validation) == (examples, [])
    assert "every completion appears only once" in split_note(examples, validation)


def test_contradictory_pairs_are_a_warning_naming_both_lines() -> None:
    data = b'{"prompt": "Code of Oslo?", "completion": "AB"}\n{"prompt": "Code of Rome?", "completion": "CD"}\n'
    data += b'{"prompt": "Code of Oslo?", "completion": "XY"}\n'
    parsed = parse_dataset(data)
    assert parsed.ok and len(parsed.examples) == 3
    assert [str(w) for w in parsed.warnings] == [
        "Line 3: the same prompt as line 1 with a different completion (contradicts it)"
    ]
