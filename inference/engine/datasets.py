"""Parse and validate fine-tuning data, and size a training run from it.

Three upload formats are accepted, detected from the content or named by the caller:

- ``prompt_completion``: JSON Lines of ``{"prompt": ..., "completion": ...}``;
- ``chat``: JSON Lines of ``{"messages": [{"role": ..., "content": ...}, ...]}``;
- ``csv``: a header row with ``prompt`` and ``completion`` columns (``,`` ``;`` or tab).

Every example is normalized to chat messages (a prompt/completion pair becomes one
user and one assistant message). Every problem is reported with its 1-based line in
the file (for CSV, the line where the record starts) and a sentence saying what is
wrong, so an admin can fix the file without guessing::

    parsed = parse_dataset(data, tokenizer=loaded.tokenizer,
                           context_length=loaded.context_length,
                           max_bytes=10_000_000, max_examples=10_000)
    if parsed.errors:
        ...  # refuse the file, show [str(problem) for problem in parsed.errors]
    parsed.stats  # examples, tokens per example, estimated steps and time
    parsed.warnings  # usable, but contradictory: the same prompt with another completion

``resolve_hyperparameters`` turns "auto" epochs, batch size and learning-rate
multiplier into numbers (the rule is documented there), ``dataset_stats`` re-estimates
steps and time for other settings, and ``split_validation`` holds out a seeded subset
without taking away every phrasing of a fact.
Nothing here imports torch or Django; a tokenizer is only needed for token counts.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from jinja2.exceptions import TemplateError

from inference.engine.json_limits import JsonTooDeepError, json_loads_limited

DatasetFormat = Literal["prompt_completion", "chat", "csv"]
FormatChoice = Literal["auto", "prompt_completion", "chat", "csv"]
Auto = Literal["auto"]
ROLES = ("system", "user", "assistant")
DEFAULT_MAX_ERRORS = 50
# A chat example filling a 32k-token context is ~130,000 characters; a line past this
# is not an example, and parsing it would only cost time.
MAX_JSONL_LINE_CHARS = 1_000_000
_FORMAT_NAMES = {"prompt_completion": "prompt/completion", "chat": "chat"}


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One training example in chat form; ``line`` is where it starts in the file."""

    messages: tuple[Message, ...]
    line: int = 0

    def chat(self) -> list[dict[str, str]]:
        """The messages as the dicts a chat template expects."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def prompt_chat(self) -> list[dict[str, str]]:
        """Every message before the last assistant message: what a model is asked."""
        return self.chat()[: self._last_assistant_index()]

    @property
    def expected_answer(self) -> str:
        """The content of the last assistant message: what the model should say."""
        return self.messages[self._last_assistant_index()].content

    def _last_assistant_index(self) -> int:
        indexes = [i for i, m in enumerate(self.messages) if m.role == "assistant"]
        if not indexes:
            raise ValueError("This example has no assistant message.")
        return indexes[-1]


@dataclass(frozen=True)
class DatasetProblem:
    """What is wrong with one line (``line``) or with the whole file (``line is None``)."""

    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"Line {self.line}: {self.reason}" if self.line is not None else self.reason


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    batch_size: int
    learning_rate_multiplier: float


@dataclass(frozen=True)
class DatasetStats:
    """Sizes of a dataset and what training on it will cost.

    Token figures are ``None`` when no tokenizer was given. ``estimated_seconds`` is
    ``None`` without a throughput figure; it counts every token of every example in
    every epoch, the same tokens ``training.train`` reports as ``tokens_seen``.
    """

    examples: int
    tokens_min: int | None
    tokens_median: int | None
    tokens_max: int | None
    tokens_total: int | None
    hyperparameters: Hyperparameters
    estimated_steps: int
    estimated_trained_tokens: int | None
    estimated_seconds: float | None


@dataclass
class ParsedDataset:
    """The outcome of ``parse_dataset``: usable only when ``errors`` is empty.

    ``errors`` holds at most ``max_errors`` problems in line order; ``more_errors``
    counts the ones left out. ``token_counts[i]`` belongs to ``examples[i]``.
    """

    format: DatasetFormat | None
    examples: list[Example]
    errors: list[DatasetProblem]
    more_errors: int
    token_counts: list[int] | None
    stats: DatasetStats
    warnings: list[DatasetProblem] = field(default_factory=list)  # usable, but an admin should look

    @property
    def ok(self) -> bool:
        return not self.errors


class _LineError(ValueError):
    """A reason why one record cannot be used."""


# --- Public functions -----------------------------------------------------------------


def parse_dataset(
    data: bytes,
    *,
    format: FormatChoice = "auto",
    tokenizer: Any = None,
    context_length: int | None = None,
    max_bytes: int | None = None,
    max_examples: int | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    hyperparameters: Hyperparameters | None = None,
    tokens_per_second: float | None = None,
) -> ParsedDataset:
    """Parse ``data``, list every problem, and measure what is usable.

    With a ``tokenizer`` every example is rendered with its chat template and
    counted; with a ``context_length`` too, longer examples are problems.
    ``hyperparameters`` default to ``resolve_hyperparameters`` of the example count.
    """
    # 1. File-level checks that make parsing pointless.
    fatal = _check_file(data, max_bytes)
    if fatal is not None:
        return _finish(None, [], [fatal], None, max_errors, hyperparameters, tokens_per_second)
    text_lines, problems = _decode_lines(data)
    # 2. Records, parsed from the lines that decoded (undecodable lines count too).
    if format == "csv" or (format == "auto" and _looks_like_csv(text_lines)):
        parsed = _parse_csv(text_lines, skip={p.line for p in problems})
    else:
        parsed = _parse_jsonl(text_lines, format)
    chosen, examples = parsed.format, parsed.examples
    record_count = parsed.records + len(problems)
    problems += parsed.problems
    # 3. Limits on the number of examples, and an empty file.
    if max_examples is not None and record_count > max_examples:
        reason = f"The file has {record_count:,} examples; the limit is {max_examples:,}."
        problems, examples = [DatasetProblem(None, reason)], []
    elif record_count == 0 and not problems:
        problems = [DatasetProblem(None, "The file has no examples.")]
    # 4. Duplicates, then lengths in tokens (only for examples that are otherwise fine).
    examples, duplicates = _drop_duplicates(examples)
    problems += duplicates
    counts = None
    if tokenizer is not None and examples:
        examples, counts, too_long = _count_tokens(examples, tokenizer, context_length)
        problems += too_long
    parsed_dataset = _finish(chosen, examples, problems, counts, max_errors, hyperparameters, tokens_per_second)
    parsed_dataset.warnings = find_contradictions(examples)
    return parsed_dataset


def resolve_hyperparameters(
    n_examples: int,
    *,
    epochs: int | Auto = "auto",
    batch_size: int | Auto = "auto",
    learning_rate_multiplier: float | Auto = "auto",
) -> Hyperparameters:
    """Turn "auto" settings into numbers from the number of training examples.

    The rule has the shape of OpenAI's published one (a target number of examples
    seen, bounded epochs, a batch that grows with the data), tuned on this CPU where
    a few dozen pairs must teach LoRA a new fact in minutes:

    - epochs: 3, raised so that training sees at least 240 examples (at most 25
      epochs) and lowered so that it sees at most 25,000 (at least 1). 48 pairs of
      made-up facts needed 4-5 epochs to answer held-out phrasings (100 % there);
    - batch size: the examples / 12, rounded down to a power of two, between 1 and 8
      (packed batches of 4-8 short examples use both cores; more steps help small sets);
    - learning-rate multiplier: 1.0 from batch size 4 up, and the square root of
      batch size / 4 below it (Adam's usual rule), so 0.71 at 2 and 0.5 at 1.
    """
    n = max(1, n_examples)
    resolved_epochs = epochs if epochs != "auto" else _auto_epochs(n)
    resolved_batch = batch_size if batch_size != "auto" else _auto_batch_size(n)
    multiplier = (
        learning_rate_multiplier
        if learning_rate_multiplier != "auto"
        else round(math.sqrt(min(resolved_batch, 4) / 4), 2)
    )
    return Hyperparameters(int(resolved_epochs), int(resolved_batch), float(multiplier))


def _auto_epochs(n_examples: int) -> int:
    if n_examples * 3 < 240:
        return min(25, math.ceil(240 / n_examples))
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def _auto_batch_size(n_examples: int) -> int:
    target = max(1, min(8, n_examples // 12))
    return 1 << (target.bit_length() - 1)


def dataset_stats(
    token_counts: Sequence[int] | None,
    *,
    n_examples: int,
    hyperparameters: Hyperparameters,
    tokens_per_second: float | None = None,
) -> DatasetStats:
    """Statistics of a dataset and an estimate of the run ``hyperparameters`` imply."""
    steps = hyperparameters.epochs * math.ceil(n_examples / hyperparameters.batch_size)
    if not token_counts:
        return DatasetStats(n_examples, None, None, None, None, hyperparameters, steps, None, None)
    total = sum(token_counts)
    trained = total * hyperparameters.epochs
    seconds = trained / tokens_per_second if tokens_per_second else None
    return DatasetStats(
        examples=n_examples,
        tokens_min=min(token_counts),
        tokens_median=int(statistics.median_low(token_counts)),
        tokens_max=max(token_counts),
        tokens_total=total,
        hyperparameters=hyperparameters,
        estimated_steps=steps,
        estimated_trained_tokens=trained,
        estimated_seconds=seconds,
    )


def split_validation(
    examples: Sequence[Example],
    *,
    fraction: float = 0.1,
    seed: int = 0,
    max_count: int | None = None,
) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of the examples (at least one), never every phrasing of a fact.

    Examples are grouped by their expected answer; only groups of two or more lend
    examples, and each keeps at least one in training, so held-out examples ask, in
    other words, about facts the model is trained on. With no such group nothing is
    held out. The same ``seed`` always holds out the same examples; both halves keep
    file order. ``fraction <= 0`` holds out nothing.
    """
    if fraction <= 0:
        return list(examples), []
    rng = random.Random(seed)
    spare: list[int] = []
    for group in _answer_groups(examples):
        rng.shuffle(group)
        spare += group[1:]  # the first of each group stays in training
    count = min(len(spare), max(1, round(len(examples) * fraction)))
    if max_count is not None:
        count = min(count, max_count)
    held = set(rng.sample(sorted(spare), count))
    train = [e for i, e in enumerate(examples) if i not in held]
    validation = [e for i, e in enumerate(examples) if i in held]
    return train, validation


def split_note(examples: Sequence[Example], validation: Sequence[Example]) -> str:
    """What ``split_validation`` held out of ``examples``, and why, in a sentence."""
    shared = sum(1 for group in _answer_groups(examples) if len(group) > 1)
    if not validation:
        if not shared:
            return (
                "Nothing held out for validation: every completion appears only once, and holding one out "
                "would test a fact the model was never shown."
            )
        return "Nothing held out for validation."
    return (
        f"{len(validation)} of {len(examples)} examples held out for validation, only from the {shared} "
        "completions given in more than one phrasing, keeping at least one phrasing of each in training: "
        "validation asks about trained facts in words the model did not see."
    )


def _answer_groups(examples: Sequence[Example]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(" ".join(example.expected_answer.split()).casefold(), []).append(index)
    return list(groups.values())


def find_contradictions(examples: Sequence[Example]) -> list[DatasetProblem]:
    """Examples that ask the same as an earlier one but expect a different completion."""
    first: dict[tuple[Message, ...], Example] = {}
    problems: list[DatasetProblem] = []
    for example in examples:
        prompt = tuple(example.messages[: len(example.prompt_chat())])
        earlier = first.setdefault(prompt, example)
        if earlier is not example and earlier.expected_answer != example.expected_answer:
            reason = f"the same prompt as line {earlier.line} with a different completion (contradicts it)"
            problems.append(DatasetProblem(example.line, reason))
    return problems


def dump_jsonl(examples: Sequence[Example]) -> bytes:
    """Write examples as chat-format JSON Lines, which ``parse_dataset`` reads back."""
    lines = [json.dumps({"messages": e.chat()}, ensure_ascii=False) for e in examples]
    return ("\n".join(lines) + "\n").encode() if lines else b""


# --- File level -----------------------------------------------------------------------


def _check_file(data: bytes, max_bytes: int | None) -> DatasetProblem | None:
    if max_bytes is not None and len(data) > max_bytes:
        reason = f"The file is {_size(len(data))}; the limit is {_size(max_bytes)}."
        return DatasetProblem(None, reason)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return DatasetProblem(None, "The file is UTF-16 text; save it as UTF-8.")
    return None


def _size(n_bytes: int) -> str:
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    if n_bytes < 1_000_000:
        return f"{n_bytes / 1000:.1f} kB"
    return f"{n_bytes / 1_000_000:.1f} MB"


def _decode_lines(data: bytes) -> tuple[list[str], list[DatasetProblem]]:
    """Split into lines (keeping their endings) and report lines that are not UTF-8."""
    lines: list[str] = []
    problems: list[DatasetProblem] = []
    raw_lines = data.removeprefix(b"\xef\xbb\xbf").splitlines(keepends=True)
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            reason = (
                f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start + 1})"
            )
            problems.append(DatasetProblem(number, reason))
            lines.append("\n")  # keeps the numbering; parsed as a blank line
    return lines, problems


def _looks_like_csv(lines: Sequence[str]) -> bool:
    """CSV when the first non-blank line is a header naming a prompt column."""
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith(("{", "[")):
        return False
    return _header_delimiter(first) is not None


@dataclass
class _Records:
    """What one parser made of the lines."""

    format: FormatChoice
    examples: list[Example] = field(default_factory=list)
    problems: list[DatasetProblem] = field(default_factory=list)
    records: int = 0


def _finish(
    chosen: FormatChoice | None,
    examples: list[Example],
    problems: list[DatasetProblem],
    counts: list[int] | None,
    max_errors: int,
    hyperparameters: Hyperparameters | None,
    tokens_per_second: float | None,
) -> ParsedDataset:
    problems = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
    shown = problems[:max_errors]
    hyper = hyperparameters or resolve_hyperparameters(len(examples))
    stats = dataset_stats(
        counts, n_examples=len(examples), hyperparameters=hyper, tokens_per_second=tokens_per_second
    )
    file_format = None if chosen is None or chosen == "auto" else cast("DatasetFormat", chosen)
    return ParsedDataset(file_format, examples, shown, len(problems) - len(shown), counts, stats)


# --- JSON Lines -----------------------------------------------------------------------


@dataclass
class _JsonlState:
    """The format the file has settled on, and the line that settled it."""

    format: FormatChoice
    line: int | None = None
    given: bool = field(default=False)


def _parse_jsonl(lines: Sequence[str], format: FormatChoice) -> _Records:
    state = _JsonlState(format, given=format != "auto")
    result = _Records(format)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        result.records += 1
        try:
            result.examples.append(_jsonl_example(line, number, state))
        except _LineError as exc:
            result.problems.append(DatasetProblem(number, str(exc)))
    result.format = state.format
    return result


def _jsonl_example(line: str, number: int, state: _JsonlState) -> Example:
    if len(line) > MAX_JSONL_LINE_CHARS:
        raise _LineError(f"longer than {MAX_JSONL_LINE_CHARS:,} characters")
    try:
        value = json_loads_limited(line)
    except JsonTooDeepError as exc:
        raise _LineError(f"nested more than {exc.limit} levels deep") from None
    except json.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise _LineError(f"not a JSON object (found {_json_type(value)})")
    kind = _record_kind(value, state)
    _settle_format(kind, number, state)
    if kind == "chat":
        return Example(_chat_messages(value), number)
    return Example(_pair_messages(value), number)


def _record_kind(value: dict[str, Any], state: _JsonlState) -> FormatChoice:
    has_chat = "messages" in value
    has_pair = "prompt" in value or "completion" in value
    if has_chat and has_pair:
        raise _LineError('has both "messages" and "prompt"/"completion"; use one format')
    if has_chat:
        return "chat"
    if has_pair:
        return "prompt_completion"
    if state.format == "chat":
        raise _LineError('missing field "messages"')
    if state.format == "prompt_completion":
        raise _LineError('missing field "prompt"')
    raise _LineError('missing field "messages" (or "prompt" and "completion")')


def _settle_format(kind: FormatChoice, number: int, state: _JsonlState) -> None:
    if state.format == "auto":
        state.format, state.line = kind, number
        return
    if kind == state.format:
        return
    found, expected = _FORMAT_NAMES[str(kind)], _FORMAT_NAMES[str(state.format)]
    where = "" if state.given else f" (line {state.line} is a {expected} example)"
    raise _LineError(f"a {found} example in a {expected} file{where}")


def _pair_messages(value: dict[str, Any]) -> tuple[Message, ...]:
    prompt = _string_field(value, "prompt").strip()
    completion = _string_field(value, "completion").strip()
    return (Message("user", prompt), Message("assistant", completion))


def _chat_messages(value: dict[str, Any]) -> tuple[Message, ...]:
    raw = value["messages"]
    if not isinstance(raw, list):
        raise _LineError(f'field "messages" must be a list, not {_json_type(raw)}')
    if not raw:
        raise _LineError('empty field "messages"')
    messages = tuple(_chat_message(item, index) for index, item in enumerate(raw, start=1))
    if not any(m.role == "assistant" for m in messages):
        raise _LineError("no assistant message")
    return messages


def _chat_message(item: Any, index: int) -> Message:
    if not isinstance(item, dict):
        raise _LineError(f"message {index} is not a JSON object (found {_json_type(item)})")
    try:
        role = _string_field(item, "role")
        content = _string_field(item, "content")
    except _LineError as exc:
        raise _LineError(f"message {index}: {exc}") from None
    if role not in ROLES:
        raise _LineError(f'message {index}: unknown role "{role}" (use system, user or assistant)')
    return Message(role, content)


def _string_field(value: dict[str, Any], name: str) -> str:
    if name not in value:
        raise _LineError(f'missing field "{name}"')
    field_value = value[name]
    if not isinstance(field_value, str):
        raise _LineError(f'field "{name}" must be a string, not {_json_type(field_value)}')
    if not field_value.strip():
        raise _LineError(f'empty field "{name}"')
    return field_value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


# --- CSV ------------------------------------------------------------------------------


def _header_delimiter(line: str) -> str | None:
    """The delimiter of a header line that names a prompt column, if it is one."""
    if "prompt" not in line.lower():
        return None
    for delimiter in (",", ";", "\t"):
        names = {name.strip().strip('"').lower() for name in line.split(delimiter)}
        if {"prompt", "completion"} <= names:
            return delimiter
    return max((",", ";", "\t"), key=line.count)


def _parse_csv(lines: Sequence[str], *, skip: set[int | None]) -> _Records:
    delimiter = _header_delimiter(next((line for line in lines if line.strip()), "")) or ","
    reader = csv.reader(io.StringIO("".join(lines), newline=""), delimiter=delimiter)
    result = _Records("csv")
    columns: dict[str, int] | None = None
    width, start = 0, 1
    try:
        for row in reader:
            # reader.line_num is the file line a record ends on; it starts after the last.
            number, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row) or number in skip:
                continue
            if columns is None:
                columns, width = _csv_columns(row, number), len(row)
                continue
            result.records += 1
            try:
                result.examples.append(_csv_example(row, number, columns, width))
            except _LineError as exc:
                result.problems.append(DatasetProblem(number, str(exc)))
    except _HeaderError as exc:
        return _Records("csv", problems=[DatasetProblem(exc.line, str(exc))])
    except csv.Error as exc:
        result.problems.append(DatasetProblem(start, f"not valid CSV ({exc})"))
    return result


class _HeaderError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line


def _csv_columns(header: list[str], number: int) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    for required in ("prompt", "completion"):
        if required not in names:
            found = ", ".join(name for name in names if name) or "nothing"
            raise _HeaderError(number, f'missing column "{required}" (the header has: {found})')
    return {name: names.index(name) for name in ("prompt", "completion")}


def _csv_example(row: list[str], number: int, columns: dict[str, int], width: int) -> Example:
    if len(row) > width:
        raise _LineError(f"has {len(row)} fields; the header has {width}")
    values = {}
    for name, index in columns.items():
        if index >= len(row):
            raise _LineError(f'missing field "{name}"')
        if not row[index].strip():
            raise _LineError(f'empty field "{name}"')
        values[name] = row[index].strip()
    return Example(
        (Message("user", values["prompt"]), Message("assistant", values["completion"])), number
    )


# --- Across examples ------------------------------------------------------------------


def _drop_duplicates(examples: list[Example]) -> tuple[list[Example], list[DatasetProblem]]:
    first_line: dict[tuple[Message, ...], int] = {}
    kept: list[Example] = []
    problems: list[DatasetProblem] = []
    for example in examples:
        earlier = first_line.setdefault(example.messages, example.line)
        if earlier != example.line:
            problems.append(DatasetProblem(example.line, f"duplicate of line {earlier}"))
        else:
            kept.append(example)
    return kept, problems


def _count_tokens(
    examples: list[Example], tokenizer: Any, context_length: int | None
) -> tuple[list[Example], list[int], list[DatasetProblem]]:
    kept: list[Example] = []
    counts: list[int] = []
    problems: list[DatasetProblem] = []
    for example, count in zip(examples, _token_counts(examples, tokenizer), strict=True):
        if isinstance(count, str):
            problems.append(DatasetProblem(example.line, count))
        elif context_length is not None and count > context_length:
            limit = f"{count:,} tokens; the limit is {context_length:,}"
            problems.append(DatasetProblem(example.line, f"longer than the model's context ({limit})"))
        else:
            kept.append(example)
            counts.append(count)
    return kept, counts, problems


def _token_counts(examples: Sequence[Example], tokenizer: Any) -> list[int | str]:
    """Tokens of each rendered example, or the reason its chat template refused it."""
    rendered = [_render(example, tokenizer) for example in examples]
    texts = [text for text in rendered if not isinstance(text, _LineError)]
    ids = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    return [str(text) if isinstance(text, _LineError) else len(next(ids)) for text in rendered]


def _render(example: Example, tokenizer: Any) -> str | _LineError:
    try:
        return str(tokenizer.apply_chat_template(example.chat(), tokenize=False))
    except (TemplateError, ValueError, TypeError, KeyError) as exc:
        return _LineError(f"the model's chat template refuses it ({exc})")
