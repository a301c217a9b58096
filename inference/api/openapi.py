"""The OpenAPI 3.1 description of /v1/, served at /v1/openapi.json.

Written by hand next to the code it describes; limits come from the same settings
the validators use, so the document and the server agree.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from inference.api.schemas import MAX_STOP_SEQUENCES, MAX_TOP_LOGPROBS, SEED_RANGE


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
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.API_MAX_MESSAGES,
        "items": _ref("ChatMessage"),
        "contains": has_user,
    }


def _model_schema(model_ids: list[str] | None) -> dict[str, Any]:
    if model_ids is None:
        return {"type": "string", "description": "A model id from GET /v1/models (listed here for a caller with a key)."}
    return {"type": "string", "enum": model_ids, "description": "A model id from GET /v1/models."}


def _chat_request_schema(model_ids: list[str] | None) -> dict[str, Any]:
    limit = settings.INFERENCE_MAX_TOKENS_LIMIT
    tokens = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": limit}, {"type": "null"}]}
    stop_item = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        "allOf": [
            # Streaming returns one choice; stream_options only go with streaming.
            {
                "if": {"required": ["stream"], "properties": {"stream": {"const": True}}},
                "then": {"properties": {"n": {"enum": [1, None]}}},
                "else": {"properties": {"stream_options": {"type": "null"}}},
            },
            # Alternatives are only listed with log probabilities.
            {
                "if": {"required": ["top_logprobs"], "properties": {"top_logprobs": {"type": "integer"}}},
                "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
            },
        ],
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
                "type": ["boolean", "null"],
                "description": "Report each generated token's log probability under the model's own "
                "distribution (before temperature, top_p and penalties).",
            },
            "top_logprobs": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": MAX_TOP_LOGPROBS,
                "description": "How many of the most likely tokens to list at each position; needs logprobs: true.",
            },
            "presence_penalty": {
                "type": ["number", "null"],
                "minimum": -2,
                "maximum": 2,
                "description": "Lowers, once, the logit of every token the reply already has.",
            },
            "frequency_penalty": {
                "type": ["number", "null"],
                "minimum": -2,
                "maximum": 2,
                "description": "Lowers the logit of every token the reply already has, per time it appeared.",
            },
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
            "logprobs": {"anyOf": [_ref("ChatCompletionLogprobs"), {"type": "null"}]},
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


def _logprobs_schemas() -> dict[str, Any]:
    token = {
        "type": "object",
        "required": ["token", "logprob", "bytes"],
        "properties": {
            "token": {"type": "string", "description": "The token as text; part of a character as \\xNN escapes."},
            "logprob": {"type": "number", "maximum": 0},
            "bytes": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0, "maximum": 255}},
        },
    }
    content_token = {
        "allOf": [token],
        "required": ["top_logprobs"],
        "properties": {"top_logprobs": {"type": "array", "items": _ref("TokenLogprob")}},
    }
    logprobs = {
        "type": "object",
        "required": ["content"],
        "description": "One entry per generated token (in a chunk: the tokens of its delta).",
        "properties": {
            "content": {"type": ["array", "null"], "items": _ref("ChatCompletionTokenLogprob")},
            "refusal": {"type": ["array", "null"], "items": _ref("ChatCompletionTokenLogprob")},
        },
    }
    return {"TokenLogprob": token, "ChatCompletionTokenLogprob": content_token, "ChatCompletionLogprobs": logprobs}


def _seed_schemas(model_ids: list[str] | None) -> dict[str, Any]:
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


def _components(model_ids: list[str] | None) -> dict[str, Any]:
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
            **_logprobs_schemas(),
            "Model": model,
            "ModelList": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
            },
            "Error": error,
            **_seed_schemas(model_ids),
            **_finetuning_schemas(),
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


def _list_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "has_more": {"type": "boolean"},
        },
    }


def _auto_or_range(bounds: tuple[int, int], description: str) -> dict[str, Any]:
    number = {"type": "integer", "minimum": bounds[0], "maximum": bounds[1]}
    return {"description": description, "anyOf": [{"const": "auto"}, number]}


def _finetuning_schemas() -> dict[str, Any]:
    nullable_int = {"type": ["integer", "null"]}
    auto_or = {
        "int": {"anyOf": [{"const": "auto"}, {"type": "integer"}]},
        "num": {"anyOf": [{"const": "auto"}, {"type": "number"}]},
    }
    hyper = {
        "type": "object",
        "properties": {
            "n_epochs": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 50}]},
            "batch_size": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 256}]},
            "learning_rate_multiplier": {
                "anyOf": [{"const": "auto"}, {"type": "number", "minimum": 0.001, "maximum": 50}]
            },
            "time_budget_seconds": _auto_or_range(
                settings.FINETUNE_BUDGET_RANGE,
                'Parley extension: seconds "auto" epochs may train; "auto": FINETUNE_TIME_BUDGET_SECONDS.',
            ),
            "max_epochs": _auto_or_range(
                settings.FINETUNE_MAX_EPOCHS_RANGE, 'Parley extension: cap on "auto" epochs; "auto": FINETUNE_MAX_EPOCHS.'
            ),
        },
        "additionalProperties": False,
    }
    resolved = {
        "type": "object",
        "properties": {
            "n_epochs": auto_or["int"],
            "batch_size": auto_or["int"],
            "learning_rate_multiplier": auto_or["num"],
            "time_budget_seconds": auto_or["int"],
            "max_epochs": auto_or["int"],
        },
    }
    training_type = {
        "type": "object",
        "description": "Parley extension: LoRA adapters or full fine-tuning.",
        "required": ["type"],
        "properties": {"type": {"enum": ["lora", "full"]}},
        "additionalProperties": False,
    }
    training_type_in = {
        "description": "Parley extension: LoRA adapters or full fine-tuning; default FINETUNE_METHOD.",
        "anyOf": [training_type, {"enum": ["lora", "full"]}, {"type": "null"}],
    }
    file = {
        "type": "object",
        "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "bytes": {"type": "integer"},
            "created_at": {"type": "integer"},
            "filename": {"type": "string"},
            "purpose": {"const": "fine-tune"},
            "status": {"enum": ["uploaded", "processed", "error"]},
        },
    }
    job = {
        "type": "object",
        "required": ["id", "object", "created_at", "model", "status", "hyperparameters", "training_file"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "fine_tuning.job"},
            "created_at": {"type": "integer"},
            "finished_at": nullable_int,
            "model": {"type": "string"},
            "fine_tuned_model": {"type": ["string", "null"]},
            "status": {"enum": ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]},
            "hyperparameters": resolved,
            "training_file": {"type": "string"},
            "validation_file": {"type": ["string", "null"]},
            "trained_tokens": nullable_int,
            "seed": {"type": "integer"},
            "estimated_finish": nullable_int,
            "error": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "training_type": training_type,
            "stop_reason": {
                "type": ["string", "null"],
                "description": "Parley extension: why training stopped, e.g. “learnt 64/64 training examples”.",
            },
            "kept_epoch": {"type": ["integer", "null"], "description": "Parley extension: the epoch whose weights were kept."},
        },
    }
    event = {
        "type": "object",
        "required": ["id", "object", "created_at", "level", "message"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "fine_tuning.job.event"},
            "created_at": {"type": "integer"},
            "level": {"enum": ["info", "warn", "error"]},
            "message": {"type": "string"},
        },
    }
    checkpoint = {
        "type": "object",
        "required": ["id", "object", "fine_tuned_model_checkpoint", "fine_tuning_job_id", "step_number", "metrics"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "fine_tuning.job.checkpoint"},
            "fine_tuned_model_checkpoint": {"type": "string"},
            "fine_tuning_job_id": {"type": "string"},
            "step_number": {"type": "integer"},
            "metrics": {"type": "object"},
        },
    }
    create_job = {
        "type": "object",
        "required": ["model", "training_file"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "A base model or a fine-tuned model to train further."},
            "training_file": {"type": "string"},
            "validation_file": {"type": ["string", "null"]},
            "hyperparameters": hyper,
            "method": {
                "type": "object",
                "properties": {
                    "type": {"const": "supervised"},
                    "supervised": {"type": "object", "properties": {"hyperparameters": hyper}},
                },
            },
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**31 - 1},
            "suffix": {"type": ["string", "null"], "maxLength": 40},
            "training_type": training_type_in,
            "integrations": {"description": "Accepted and ignored."},
            "metadata": {"description": "Accepted and ignored."},
        },
    }
    deleted = {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"type": "boolean"}},
    }
    return {
        "File": file,
        "FileList": _list_of("File"),
        "DeletedFile": deleted,
        "FineTuningJob": job,
        "FineTuningJobList": _list_of("FineTuningJob"),
        "FineTuningJobEventList": _list_of("FineTuningJobEvent"),
        "FineTuningJobEvent": event,
        "FineTuningJobCheckpoint": checkpoint,
        "FineTuningJobCheckpointList": _list_of("FineTuningJobCheckpoint"),
        "CreateFineTuningJobRequest": create_job,
    }


def _finetuning_paths() -> dict[str, Any]:
    def op(operation_id: str, summary: str, ok: str, description: str, *errors: int, **extra: Any) -> dict[str, Any]:
        statuses = sorted({401, 403, 429, *errors})
        return {
            "operationId": operation_id,
            "summary": summary,
            **extra,
            "responses": {"200": _json(_ref(ok), description), **_errors(*statuses)},
        }

    file_id = [{"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    job_id = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    paging = [
        {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    ]
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {"file": {"type": "string", "format": "binary"}, "purpose": {"const": "fine-tune"}},
                }
            }
        },
    }
    create = {"required": True, "content": {"application/json": {"schema": _ref("CreateFineTuningJobRequest")}}}
    return {
        "/files": {
            "get": op("listFiles", "List training files", "FileList", "The files."),
            "post": op(
                "createFile",
                "Upload and validate a training file",
                "File",
                "The stored file.",
                400,
                413,
                requestBody=upload,
            ),
        },
        "/files/{file_id}": {
            "get": op("retrieveFile", "Retrieve a file", "File", "The file.", 404, parameters=file_id),
            "delete": op(
                "deleteFile", "Delete a file no job uses", "DeletedFile", "Deleted.", 400, 404, parameters=file_id
            ),
        },
        "/fine_tuning/jobs": {
            "get": op(
                "listFineTuningJobs", "List fine-tuning jobs", "FineTuningJobList", "The jobs.", 400, parameters=paging
            ),
            "post": op(
                "createFineTuningJob",
                "Create a fine-tuning job",
                "FineTuningJob",
                "The job.",
                400,
                404,
                413,
                requestBody=create,
            ),
        },
        "/fine_tuning/jobs/{job_id}": {
            "get": op("retrieveFineTuningJob", "Retrieve a job", "FineTuningJob", "The job.", 404, parameters=job_id),
        },
        "/fine_tuning/jobs/{job_id}/cancel": {
            "post": op(
                "cancelFineTuningJob",
                "Cancel a job",
                "FineTuningJob",
                "The cancelled job.",
                400,
                404,
                parameters=job_id,
            ),
        },
        "/fine_tuning/jobs/{job_id}/events": {
            "get": op(
                "listFineTuningEvents",
                "A job's events, newest first",
                "FineTuningJobEventList",
                "The events.",
                400,
                404,
                parameters=job_id + paging,
            ),
        },
        "/fine_tuning/jobs/{job_id}/checkpoints": {
            "get": op(
                "listFineTuningCheckpoints",
                "A succeeded job's model",
                "FineTuningJobCheckpointList",
                "The checkpoints.",
                400,
                404,
                parameters=job_id + paging,
            ),
        },
    }


def openapi_document(*, server_url: str, model_ids: list[str] | None) -> dict[str, Any]:
    """The whole document; ``server_url`` is this server's /v1 base URL and
    ``model_ids`` the models the caller may use now (None leaves model ids out)."""
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
        "paths": {
            "/chat/completions": _chat_path(),
            "/chat-completions": _seed_path(),
            **_model_paths(),
            **_finetuning_paths(),
        },
        "components": _components(model_ids),
    }
