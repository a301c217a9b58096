"""Property test: the training-data parser never crashes, and what it accepts is sound."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.engine.datasets import parse_dataset
from tests.tiny_model import build_byte_tokenizer

TOKENIZER = build_byte_tokenizer()
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "", 3]), "content": scalars}
)
records = st.one_of(
    st.fixed_dictionaries({"prompt": scalars, "completion": scalars}),
    st.fixed_dictionaries({"messages": st.lists(message, max_size=4)}),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
    st.lists(scalars, max_size=3),
    scalars,
)
jsonl = st.lists(records.map(json.dumps) | st.text(max_size=60), max_size=8).map(lambda lines: "\n".join(lines))
csv_text = st.lists(st.lists(st.text(max_size=20), min_size=1, max_size=3).map(",".join), max_size=6).map(
    lambda rows: "prompt,completion\n" + "\n".join(rows)
)
payloads = st.one_of(jsonl.map(str.encode), csv_text.map(str.encode), st.binary(max_size=300))


@settings(max_examples=300, deadline=None)
@given(data=payloads)
def test_any_upload_is_either_usable_or_explained_line_by_line(data: bytes) -> None:
    parsed = parse_dataset(data, tokenizer=TOKENIZER, context_length=512, max_errors=20)
    if parsed.ok:
        assert parsed.examples, "an accepted file has examples"
        for example in parsed.examples:
            roles = [m.role for m in example.messages]
            assert "assistant" in roles and all(m.content.strip() for m in example.messages)
        assert parsed.token_counts is not None and len(parsed.token_counts) == len(parsed.examples)
        assert max(parsed.token_counts) <= 512
    else:
        assert len(parsed.errors) <= 20
        lines = max(1, len(data.splitlines()))
        for problem in parsed.errors:
            assert problem.reason and str(problem)[0].isupper(), f"a sentence for the person: {problem}"
            assert problem.line is None or 1 <= problem.line <= lines, f"{problem} points at a real line"
