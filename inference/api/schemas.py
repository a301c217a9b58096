"""Validate request bodies for /v1/ and turn them into typed requests.

Every rejection is a 400 that names the field (``messages[2].content``) and says what
was wrong. Parameters Parley cannot honour (tools, logit bias, structured output) are
refused by name rather than silently ignored, so a client never gets a reply that
looks like it used them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from inference.api.errors import ApiError, invalid
from inference.engine.json_limits import JsonTooDeepError, json_loads_limited
from inference.engine.prompt import ChatMessage

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
SEED_RANGE = (-(2**63), 2**63 - 1)

# Accepted and without effect on generation (``user`` and ``metadata`` are
# bookkeeping for the caller; ``service_tier`` has one tier here).
IGNORED_FIELDS = {"user", "metadata", "service_tier", "parallel_tool_calls"}
CHAT_FIELDS = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
    "store",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "response_format",
    *IGNORED_FIELDS,
}
UNSUPPORTED = {
    "tools": "Tool calls are not supported by Parley's models; leave out 'tools'.",
    "tool_choice": "Tool calls are not supported by Parley's models; leave out 'tool_choice'.",
    "functions": "Function calls are not supported by Parley's models; leave out 'functions'.",
    "function_call": "Function calls are not supported by Parley's models; leave out 'function_call'.",
    "audio": "Audio output is not supported; leave out 'audio'.",
    "modalities": "Only text output is supported; leave out 'modalities'.",
    "prediction": "Predicted outputs are not supported; leave out 'prediction'.",
    "reasoning_effort": "Parley's models do not take a reasoning effort; leave out 'reasoning_effort'.",
    "web_search_options": "Web search is not supported; leave out 'web_search_options'.",
}


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request. Roles are normalised to system/user/assistant."""

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    store: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = json_loads_limited(raw)
    except JsonTooDeepError as exc:
        message = f"{exc} Parley reads request bodies up to {exc.limit} levels deep."
        raise ApiError(400, message, param=exc.field, code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _optional_bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false.")
    return value


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or not low <= value <= high:
        raise invalid(name, f"'{name}' must be a number from {low:g} to {high:g}.")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or not low <= value <= high:
        raise invalid(name, f"'{name}' must be a whole number from {low} to {high}.")
    return int(value)


def _check_fields(body: dict[str, Any]) -> None:
    for name in body:
        if name in UNSUPPORTED and body[name] is not None:
            raise invalid(name, UNSUPPORTED[name], code="unsupported_parameter")
        if name not in CHAT_FIELDS and name not in UNSUPPORTED:
            raise invalid(name, f"Unrecognized request argument supplied: {name}.", code="unknown_parameter")


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", "'model' is required: the id of a model from GET /v1/models.")
    return model


def _content(value: object, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
    if not isinstance(value, list):
        raise invalid(where, f"'{where}' must be a string or a list of text parts.")
    texts = []
    for index, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise invalid(
                f"{where}[{index}].type",
                f"'{where}[{index}]' is a {kind!s} part; Parley's models read only text parts "
                '({"type": "text", "text": "..."}).',
            )
        if not isinstance(part.get("text"), str):
            raise invalid(f"{where}[{index}].text", f"'{where}[{index}].text' must be a string.")
        texts.append(part["text"])
    return "".join(texts)


def _message(index: int, value: object) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        raise invalid(where, f"'{where}' must be an object with 'role' and 'content'.")
    role = value.get("role")
    if role not in ROLES:
        raise invalid(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}.")
    if "content" not in value:
        raise invalid(f"{where}.content", f"'{where}.content' is required.")
    if value.get("tool_calls"):
        raise invalid(f"{where}.tool_calls", "Tool calls are not supported by Parley's models.")
    return {"role": role, "content": _content(value["content"], f"{where}.content", role)}


def _messages(body: dict[str, Any]) -> list[ChatMessage]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "'messages' must be a non-empty list of {role, content} objects.")
    if len(raw) > settings.API_MAX_MESSAGES:
        raise invalid(
            "messages", f"'messages' holds {len(raw):,} messages; the limit is {settings.API_MAX_MESSAGES:,} a request."
        )
    parsed = [_message(index, value) for index, value in enumerate(raw)]
    limit = settings.CHAT_MAX_MESSAGE_CHARS * 16
    if sum(len(m["content"]) for m in parsed) > limit:
        raise invalid("messages", f"The messages hold more than {limit:,} characters in all.")
    if not any(m["role"] == "user" for m in parsed):
        raise invalid("messages", "'messages' must include at least one message with role 'user'.")
    return normalise_roles(parsed)


def normalise_roles(messages: list[ChatMessage]) -> list[ChatMessage]:
    """One leading system message (system and developer texts joined), then the turns.

    Chat templates accept a system message only at the start, so instructions given
    later in the list are folded into it, in order.
    """
    system = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"])
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    return ([{"role": "system", "content": system}] if system else []) + turns


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"'stop' must be a string or a list of up to {MAX_STOP_SEQUENCES} strings.")
    if any(not isinstance(item, str) or not item for item in items):
        raise invalid("stop", "Each stop sequence must be a non-empty string.")
    return tuple(items)


def _max_tokens(body: dict[str, Any]) -> int:
    limit = settings.INFERENCE_MAX_TOKENS_LIMIT
    first = _integer(body, "max_completion_tokens", 1, limit)
    second = _integer(body, "max_tokens", 1, limit)
    return first or second or min(settings.INFERENCE_DEFAULT_MAX_TOKENS, limit)


def _logprobs(body: dict[str, Any]) -> tuple[bool, int]:
    """``(logprobs, top_logprobs)``; alternatives are only given with log probabilities."""
    logprobs = _optional_bool(body, "logprobs")
    top = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true.")
    return logprobs, top or 0


def _refuse_unsupported_values(body: dict[str, Any]) -> None:
    if body.get("logit_bias"):
        raise invalid("logit_bias", "'logit_bias' is not supported by Parley's engine; leave it out.")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise invalid("response_format", 'Only {"type": "text"} responses are supported.')


def _stream_settings(body: dict[str, Any], n: int) -> tuple[bool, bool]:
    stream = _optional_bool(body, "stream")
    options = body.get("stream_options")
    if options is None:
        include_usage = False
    elif not stream:
        raise invalid("stream_options", "'stream_options' is only allowed when 'stream' is true.")
    elif not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise invalid("stream_options", "'stream_options' must be an object like {\"include_usage\": true}.")
    else:
        include_usage = bool(options.get("include_usage", False))
    if stream and n > 1:
        raise invalid("n", "Streaming returns one choice; send 'n': 1 with 'stream': true.")
    return stream, include_usage


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """Validate an OpenAI chat completion body; raise ApiError naming the first bad field."""
    _check_fields(body)
    _refuse_unsupported_values(body)
    n = _integer(body, "n", 1, settings.API_MAX_CHOICES) or 1
    stream, include_usage = _stream_settings(body, n)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:  # only the most likely token survives: the same as greedy decoding
        temperature, top_p = 0.0, 1.0
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user", "'user' must be a string.")
    logprobs, top_logprobs = _logprobs(body)
    return ChatRequest(
        model=_model(body),
        messages=_messages(body),
        stream=stream,
        include_usage=include_usage,
        max_tokens=_max_tokens(body),
        temperature=temperature,
        top_p=top_p,
        stop=_stop(body),
        seed=_integer(body, "seed", *SEED_RANGE),
        n=n,
        store=_optional_bool(body, "store"),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def parse_seed_request(body: dict[str, Any]) -> ChatRequest:
    """The seed API's body: ``{"model", "messages", "stream"}`` and nothing else."""
    for name in body:
        if name not in ("model", "messages", "stream"):
            raise invalid(name, f"Unrecognized request argument supplied: {name}.", code="unknown_parameter")
    return ChatRequest(
        model=_model(body),
        messages=_messages(body),
        stream=_optional_bool(body, "stream"),
        max_tokens=min(settings.INFERENCE_DEFAULT_MAX_TOKENS, settings.INFERENCE_MAX_TOKENS_LIMIT),
        temperature=settings.INFERENCE_DEFAULT_TEMPERATURE,
    )
