"""The /v1 API's response bodies, declared once as pydantic models.

The views build every JSON answer through these models (``.model_dump()``), and
/v1/openapi.json describes the answers with their JSON schemas, so what the document
promises is what is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from django.db.models import TextChoices
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from finetuning import models as tables

FinishReason = Literal["stop", "length"] | None


class ResponseBody(BaseModel):
    """A JSON answer; in the schema every field is present (null where it has no value)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class Usage(ResponseBody):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TokenLogprob(ResponseBody):
    token: Annotated[str, Field(description="The token as text; part of a character as \\xNN escapes.")]
    logprob: Annotated[float, Field(le=0)]
    bytes: list[Annotated[int, Field(ge=0, le=255)]] | None


class ChatCompletionTokenLogprob(TokenLogprob):
    top_logprobs: list[TokenLogprob]


class ChatCompletionLogprobs(ResponseBody):
    """One entry per generated token (in a chunk: the tokens of its delta)."""

    content: list[ChatCompletionTokenLogprob] | None
    refusal: list[ChatCompletionTokenLogprob] | None = None


class AssistantMessage(ResponseBody):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatCompletionChoice(ResponseBody):
    index: int
    message: AssistantMessage
    logprobs: ChatCompletionLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(ResponseBody):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage | None
    system_fingerprint: None = None


def _is_none(value: object) -> bool:
    return value is None


class ChunkDelta(BaseModel):
    """What a chunk adds: the role in the first, text in the next ones, nothing in the last.
    Fields without a value are left out of the chunk, as OpenAI does."""

    role: Annotated[Literal["assistant"] | None, Field(exclude_if=_is_none)] = None
    content: Annotated[str | None, Field(exclude_if=_is_none)] = None


class ChatCompletionChunkChoice(ResponseBody):
    index: int
    delta: ChunkDelta
    logprobs: ChatCompletionLogprobs | None
    finish_reason: FinishReason


class ChatCompletionChunk(ResponseBody):
    """One event of a stream; ``usage`` is there only with ``stream_options.include_usage``
    (null but in the last chunk, which has no choices)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChatCompletionChunkChoice]
    usage: Usage | None = None


# --- The seed's (Spellbook's) shape ----------------------------------------------------


class SeedMessage(ResponseBody):
    """Spellbook's message: the model speaks as the "agent"; Parley's models request no tools."""

    role: Literal["agent"] = "agent"
    content: str
    tool_request: None = None


class SeedChatCompletion(ResponseBody):
    message: SeedMessage
    finish_reason: FinishReason


class SeedTokenUsage(ResponseBody):
    prompt: int
    completion: int
    total: int


class SeedChatResponse(ResponseBody):
    chat_completion: SeedChatCompletion
    token_usage: SeedTokenUsage | None


# --- Models and errors -----------------------------------------------------------------


class Model(ResponseBody):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(ResponseBody):
    message: str
    type: str
    param: str | None
    code: str | None


class Error(ResponseBody):
    error: ErrorDetail


# --- Files and fine-tuning -------------------------------------------------------------


def _choices(field: type[TextChoices]) -> WithJsonSchema:
    """A model field's choices, stated in place in the schema."""
    return WithJsonSchema({"type": "string", "enum": list(field.values)})


AutoInt = Literal["auto"] | int
AutoNumber = Literal["auto"] | float


class File(ResponseBody):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune"]
    status: Annotated[tables.TrainingFile.Status, _choices(tables.TrainingFile.Status)]
    status_details: str | None = None


class FileList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[File]
    has_more: bool


class DeletedFile(ResponseBody):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobHyperparameters(ResponseBody):
    """The job's settings, "auto" resolved once the job is queued."""

    model_config = ConfigDict(extra="allow")

    n_epochs: AutoInt | None = None
    batch_size: AutoInt | None = None
    learning_rate_multiplier: AutoNumber | None = None
    time_budget_seconds: AutoInt | None = None
    max_epochs: AutoInt | None = None


class JobSupervised(ResponseBody):
    hyperparameters: JobHyperparameters


class JobMethod(ResponseBody):
    type: Literal["supervised"] = "supervised"
    supervised: JobSupervised


class TrainingType(ResponseBody):
    """Parley extension: LoRA adapters or full fine-tuning."""

    type: Literal["lora", "full"]


class JobError(ResponseBody):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(ResponseBody):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str = "parley"
    status: Annotated[tables.FineTuningJob.Status, _choices(tables.FineTuningJob.Status)]
    hyperparameters: JobHyperparameters
    method: JobMethod
    training_type: TrainingType
    training_file: str
    validation_file: str | None
    result_files: list[str] = []
    trained_tokens: int | None
    error: JobError | None
    seed: int
    estimated_finish: int | None
    integrations: list[Any] = []
    user_provided_suffix: str | None
    metadata: dict[str, str] | None = None
    stop_reason: Annotated[
        str | None, Field(description="Parley extension: why training stopped, e.g. “learnt 64/64 training examples”.")
    ]
    kept_epoch: Annotated[int | None, Field(description="Parley extension: the epoch whose weights were kept.")]


class FineTuningJobList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(ResponseBody):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Annotated[tables.FineTuningEvent.Level, _choices(tables.FineTuningEvent.Level)]
    message: str
    type: Literal["message"] = "message"
    data: None = None


class FineTuningJobEventList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class CheckpointMetrics(ResponseBody):
    step: int | None
    train_loss: float | None
    valid_loss: float | None
    valid_mean_token_accuracy: float | None


class FineTuningJobCheckpoint(ResponseBody):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int | None
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int | None
    metrics: CheckpointMetrics


class FineTuningJobCheckpointList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
