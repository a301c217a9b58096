"""The OpenAPI 3.1 description of /v1/, served at /v1/openapi.json.

Written by hand next to the code it describes; limits come from the same settings
the validators use, so the document and the server agree.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from inference.api.schemas import MAX_STOP_SEQUENCES, SEED_RANGE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid request; `error.param` names the field.",
        401: "Missing, unknown or revoked API key.",
        403: "The key's user may not do this.",
        404: "Unknown model or object.",
        405: "Method not allowed.",
        413: "Request body too large.",
        429: "Rate limit reached for this key; see Retry-After.",
        500: "The server or the model failed.",
        503: "The model or a generation worker is not available right now.",
    }
    return {str(status): _json(_ref("Error"), reasons[status]) for status in statuses}


def _message_schema() -> dict[str, Any]:
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    }
    content = {"anyOf": [{"type": "string"}, {"type": "array", "items": text_part}]}
    return {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": content,
            "name": {"type": "string"},
        },
    }


def _messages_schema() -> dict[str, Any]:
    has_user = {"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}}
    return {"type": "array", "minItems": 1, "items": _ref("ChatMessage"), "contains": has_user}


def _model_schema(model_ids: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": model_ids, "description": "A model id from GET /v1/models."}


def _chat_request_schema(model_ids: list[str]) -> dict[str, Any]:
    limit = settings.INFERENCE_MAX_TOKENS_LIMIT
    tokens = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": limit}, {"type": "null"}]}
    stop_item = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        # Streaming returns one choice; stream_options only go with streaming.
        "if": {"required": ["stream"], "properties": {"stream": {"const": True}}},
        "then": {"properties": {"n": {"enum": [1, None]}}},
        "else": {"properties": {"stream_options": {"type": "null"}}},
        "properties": {
            "model": _model_schema(model_ids),
            "messages": _messages_schema(),
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {
                "type": ["object", "null"],
                "properties": {"include_usage": {"type": "boolean"}},
                "description": "Only with stream: true.",
            },
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "stop": {
                "anyOf": [
                    stop_item,
                    {"type": "array", "items": stop_item, "maxItems": MAX_STOP_SEQUENCES},
                    {"type": "null"},
                ]
            },
            "seed": {"type": ["integer", "null"], "minimum": SEED_RANGE[0], "maximum": SEED_RANGE[1]},
            "n": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": settings.API_MAX_CHOICES,
                "description": "More than 1 only without streaming.",
            },
            "user": {"type": ["string", "null"]},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "store": {"type": ["boolean", "null"], "description": "Keep the completion as a transcript."},
            "logprobs": {
                "enum": [False, None],
                "description": "Only false: Parley's engine does not report log probabilities.",
            },
            "top_logprobs": {"type": "null", "description": "Not supported."},
            "presence_penalty": {"enum": [0, None], "description": "Only 0 is supported."},
            "frequency_penalty": {"enum": [0, None], "description": "Only 0 is supported."},
            "response_format": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["type"],
                        "additionalProperties": False,
                        "properties": {"type": {"const": "text"}},
                    },
                    {"type": "null"},
                ]
            },
        },
    }


def _usage_schema() -> dict[str, Any]:
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {"type": "object", "required": list(counts), "properties": {name: {"type": "integer"} for name in counts}}


def _completion_schema(chunk: bool) -> dict[str, Any]:
    finish = {"enum": ["stop", "length", None]}
    choice = {
        "type": "object",
        "required": ["index", "delta" if chunk else "message", "finish_reason"],
        "properties": {
            "index": {"type": "integer"},
            "finish_reason": finish,
            "logprobs": {"type": "null"},
            ("delta" if chunk else "message"): {
                "type": "object",
                "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
            },
        },
    }
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion.chunk" if chunk else "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": {"anyOf": [_ref("Usage"), {"type": "null"}]},
        },
    }


def _seed_schemas(model_ids: list[str]) -> dict[str, Any]:
    request = {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        "properties": {
            "model": _model_schema(model_ids),
            "messages": _messages_schema(),
            "stream": {"type": ["boolean", "null"]},
        },
    }
    usage = {"prompt", "completion", "total"}
    response = {
        "type": "object",
        "required": ["chat_completion", "token_usage"],
        "properties": {
            "chat_completion": {
                "type": "object",
                "required": ["message", "finish_reason"],
                "properties": {
                    "message": {
                        "type": "object",
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                    },
                    "finish_reason": {"enum": ["stop", "length", None]},
                },
            },
            "token_usage": {
                "anyOf": [
                    {"type": "object", "properties": {name: {"type": "integer"} for name in sorted(usage)}},
                    {"type": "null"},
                ]
            },
        },
    }
    return {"SeedChatRequest": request, "SeedChatResponse": response}


def _components(model_ids: list[str]) -> dict[str, Any]:
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from Parley's API keys page."},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
        "schemas": {
            "ChatMessage": _message_schema(),
            "ChatCompletionRequest": _chat_request_schema(model_ids),
            "ChatCompletion": _completion_schema(chunk=False),
            "ChatCompletionChunk": _completion_schema(chunk=True),
            "Usage": _usage_schema(),
            "Model": model,
            "ModelList": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
            },
            "Error": error,
            **_seed_schemas(model_ids),
        },
    }


def _sse_event(*payloads: str, done_marker: bool) -> dict[str, Any]:
    """One server-sent event: its ``data`` is a JSON payload (or the ``[DONE]`` marker)."""
    json_data = {"contentMediaType": "application/json", "contentSchema": {"anyOf": [_ref(p) for p in payloads]}}
    data: dict[str, Any] = {"type": "string", **json_data}
    if done_marker:
        data = {"type": "string", "if": {"const": "[DONE]"}, "then": True, "else": json_data}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": data},
        "description": "Each event of the stream (`data: ...` followed by a blank line).",
    }


def _chat_path() -> dict[str, Any]:
    ok = {
        "description": "The completion, or with stream: true a text/event-stream of ChatCompletionChunk "
        "objects as `data:` lines ending with `data: [DONE]`.",
        "content": {
            "application/json": {"schema": _ref("ChatCompletion")},
            "text/event-stream": {"schema": _sse_event("ChatCompletionChunk", "Error", done_marker=True)},
        },
    }
    return {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "Create a chat completion",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
            },
            "responses": {"200": ok, **_errors(400, 401, 404, 413, 429, 500, 503)},
        }
    }


def _seed_path() -> dict[str, Any]:
    ok = {
        "description": "The reply, or with stream: true a text/event-stream of SeedChatResponse objects as "
        "`data:` lines; the last one carries the finish reason and token usage.",
        "content": {
            "application/json": {"schema": _ref("SeedChatResponse")},
            "text/event-stream": {"schema": _sse_event("SeedChatResponse", "Error", done_marker=False)},
        },
    }
    return {
        "post": {
            "operationId": "createSeedChatCompletion",
            "summary": "Create a chat completion (Parley's original shape)",
            "security": [{"apiKeyHeader": []}, {"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SeedChatRequest")}}},
            "responses": {"200": ok, **_errors(400, 401, 404, 413, 429, 500, 503)},
        }
    }


def _model_paths() -> dict[str, Any]:
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/models": {
            "get": {
                "operationId": "listModels",
                "summary": "List the models this key may use",
                "responses": {"200": _json(_ref("ModelList"), "The models."), **_errors(401, 429)},
            }
        },
        "/models/{model_id}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "Retrieve a model",
                "parameters": [model_id],
                "responses": {"200": _json(_ref("Model"), "The model."), **_errors(401, 404, 429)},
            }
        },
    }


def openapi_document(*, server_url: str, model_ids: list[str]) -> dict[str, Any]:
    """The whole document; ``server_url`` is this server's /v1 base URL and
    ``model_ids`` the models it serves now."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley API",
            "version": "1.0.0",
            "description": "OpenAI-compatible endpoints for Parley's models. Authenticate with "
            '`Authorization: Bearer KEY`; errors are `{"error": {message, type, param, code}}`.',
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {"/chat/completions": _chat_path(), "/chat-completions": _seed_path(), **_model_paths()},
        "components": _components(model_ids),
    }
