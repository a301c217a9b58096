"""The OpenAPI 3.1 description of /v1/, served at /v1/openapi.json.

The schemas of the bodies are generated from the pydantic models the server validates
requests with (``api.schemas``) and builds answers with
(``api.responses``); limits an operator sets come into both from the same
settings. This module adds what the models do not know: the paths, which body each
operation takes and answers with, and the model ids a caller may use.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from api import responses, schemas

REQUESTS: tuple[type[BaseModel], ...] = (
    schemas.ChatCompletionRequest,
    schemas.SeedChatRequest,
    schemas.CreateFineTuningJobRequest,
)
RESPONSES: tuple[type[BaseModel], ...] = (
    responses.ChatCompletion,
    responses.ChatCompletionChunk,
    responses.SeedChatResponse,
    responses.Model,
    responses.ModelList,
    responses.Error,
    responses.File,
    responses.FileList,
    responses.DeletedFile,
    responses.FineTuningJob,
    responses.FineTuningJobList,
    responses.FineTuningJobEventList,
    responses.FineTuningJobCheckpointList,
)


class _WithoutFieldTitles(GenerateJsonSchema):
    """Property titles would only repeat the property names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def component_schemas() -> dict[str, Any]:
    """Every request and response body's JSON schema, by model name."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(model, "validation") for model in REQUESTS]
    models += [(model, "serialization") for model in RESPONSES]
    _, document = models_json_schema(
        models, ref_template="#/components/schemas/{model}", schema_generator=_WithoutFieldTitles
    )
    return document["$defs"]


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


def _name_models(schemas_by_name: dict[str, Any], model_ids: list[str] | None) -> None:
    """List the caller's model ids in the chat requests' ``model`` (None: say where to find them)."""
    for name in ("ChatCompletionRequest", "SeedChatRequest"):
        model = schemas_by_name[name]["properties"]["model"]
        if model_ids is None:
            model["description"] = "A model id from GET /v1/models (listed here for a caller with a key)."
        else:
            model["enum"] = model_ids


def _components(model_ids: list[str] | None) -> dict[str, Any]:
    bodies = component_schemas()
    _name_models(bodies, model_ids)
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from Parley's API keys page."},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
        "schemas": bodies,
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
