"""JSON from strangers, parsed with a bound on nesting.

``json.loads`` recurses once per level: a body nested 50,000 levels deep raises
RecursionError, which no caller expected (a 500, a dead socket, a crashed upload).
``json_loads_limited`` turns any nesting beyond ``MAX_JSON_DEPTH`` into
``JsonTooDeepError``, naming the top-level field that holds it, so each caller can
answer in its own error shape. Sizes are bounded by the callers, before parsing.
"""

from __future__ import annotations

import json
import re
from typing import Any

# OpenAI's deepest legitimate body is body > messages > message > content > part (5).
MAX_JSON_DEPTH = 32

_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_INNERMOST = re.compile(r"\[\]|\{\}")
# A string (a key if a colon follows), or a bracket: enough to follow nesting.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"\s*+(:?)|[\[\]{}]', re.S)


class JsonTooDeepError(ValueError):
    """Nesting beyond the limit; ``field`` is the top-level key holding it, if any."""

    def __init__(self, field: str | None, limit: int) -> None:
        where = f"'{field}'" if field is not None else "The JSON"
        super().__init__(f"{where} is nested more than {limit} levels deep.")
        self.field = field
        self.limit = limit


def json_loads_limited(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads``, or JsonTooDeepError (a ValueError) past ``max_depth`` levels."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonTooDeepError(_deep_field(text, max_depth), max_depth) from None
    if _nesting_exceeds(text, max_depth):
        raise JsonTooDeepError(_deep_field(text, max_depth), max_depth)
    return value


def _nesting_exceeds(valid_json: str, limit: int) -> bool:
    """Peel the innermost brackets off ``limit`` times: anything left was nested deeper.

    Each pass is a C-speed scan: the check costs about what parsing does (0.2 s for a
    megabyte of brackets), where walking the parsed objects in Python cost twice that.
    """
    if valid_json.count("[") + valid_json.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", valid_json))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _INNERMOST.sub("", brackets)
    return bool(brackets)


def _deep_field(text: str, limit: int) -> str | None:
    """The top-level key under which ``text`` first nests past ``limit``.

    Every string up to that point is well formed (``json.loads`` got past it), so the
    scan is linear, and it stops as soon as the nesting passes the limit.
    """
    depth, field = 0, None
    for token in _TOKEN.finditer(text):
        found = token.group(0)
        if found in ("[", "{"):
            depth += 1
            if depth > limit:
                return field
        elif found in ("]", "}"):
            depth -= 1
        elif depth == 1 and token.group(1):
            field = json.loads(found.rstrip()[:-1])
    return field
