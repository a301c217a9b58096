"""The /v1 API's request bodies, declared once as pydantic models.

Requests are validated against these models and /v1/openapi.json is generated from
them (``api.openapi``), so the document and the server cannot disagree.
Limits an operator sets (``API_MAX_MESSAGES``, ``INFERENCE_MAX_TOKENS_LIMIT``,
``API_MAX_CHOICES``) are read from the settings when a body is validated and when the
document is written.

Every rejection is a 400 in OpenAI's error shape that names the field
(``messages[2].content``) and says what was wrong. Parameters Parley cannot honour
(tools, logit bias, structured output) are refused by name rather than silently
ignored, so a client never gets a reply that looks like it used them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from django.conf import settings
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from api.errors import ApiError, invalid
from finetuning.services import BATCH_SIZE_RANGE, LEARNING_RATE_MULTIPLIER_RANGE, N_EPOCHS_RANGE
from inference.engine import prompt
from inference.engine.json_limits import JsonTooDeepError, json_loads_limited

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
SEED_RANGE = (-(2**63), 2**63 - 1)

# Refused by name when given a value (null is the same as leaving them out).
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


# --- Building blocks -------------------------------------------------------------------


class RequestBody(BaseModel):
    """A JSON body as sent: no coercion (``"1"`` is not a number, ``1`` not a boolean),
    no NaN or infinity, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def refusal(field: str, message: str) -> PydanticCustomError:
    """A rule across fields broken: the error names ``field`` (next to where it was raised)."""
    return PydanticCustomError("invalid_value", message, {"field": field})


@dataclass(frozen=True)
class AtMostSetting:
    """An upper bound an operator sets: the setting's value bounds the number (or with
    ``items``, the list's length) when a body is validated, and is the bound the schema
    states. With ``items`` the length is checked before the items are read."""

    setting: str
    items: str = ""  # what the list holds, to bound its length instead of a number

    def limit(self) -> int:
        return int(getattr(settings, self.setting))

    def _check_number(self, value: int) -> int:
        if value > self.limit():
            raise PydanticCustomError("less_than_equal", "must be at most {le}", {"le": self.limit()})
        return value

    def _check_length(self, value: object) -> object:
        if isinstance(value, list) and len(value) > self.limit():
            message = f"holds {len(value):,} {self.items}; the limit is {self.limit():,} a request"
            raise PydanticCustomError("too_many_items", message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        schema = handler(source)
        if self.items:
            return core_schema.no_info_before_validator_function(self._check_length, schema)
        return core_schema.no_info_after_validator_function(self._check_number, schema)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["maxItems" if self.items else "maximum"] = self.limit()
        bound = f"At most {self.setting} (here {self.limit():,})."
        json_schema["description"] = f"{json_schema['description']} {bound}" if "description" in json_schema else bound
        return json_schema


def json_type(value: object) -> str | None:
    """The JSON type of ``value``: the tag of the union branch that reads it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    kinds = {float: "number", str: "string", list: "array", dict: "object"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), None)


def json_number(value: object) -> str | None:
    """Like ``json_type``, with integers read as numbers."""
    kind = json_type(value)
    return "number" if kind == "integer" else kind


# Union branches appear in an error's location under these tags; a field's name never does.
UNION_TAGS = frozenset({"boolean", "integer", "number", "string", "array", "object"})


def either(message: str, tag: Any = json_type) -> Discriminator:
    """Pick a union's branch by the value's JSON type; no branch for it is ``message``."""
    return Discriminator(tag, custom_error_type="invalid_type", custom_error_message=message)


# --- Chat completions ------------------------------------------------------------------


class TextPart(RequestBody):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


Content = Annotated[
    Annotated[str, Tag("string")] | Annotated[list[TextPart], Tag("array")],
    either('must be a string or a list of text parts ({"type": "text", "text": "..."})'),
]


def _no_tool_calls(value: list[Any] | None) -> list[Any] | None:
    if value:
        raise PydanticCustomError("unsupported", "is not supported: Parley's models do not call tools")
    return value


class ChatMessage(RequestBody):
    """One message; ``content`` may be null only for an assistant's."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Content | None
    name: str | None = None
    tool_calls: Annotated[
        list[Any] | None, AfterValidator(_no_tool_calls), Field(json_schema_extra={"maxItems": 0})
    ] = None

    @model_validator(mode="after")
    def _content_given(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise refusal("content", "must be a string or a list of text parts")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


def _messages_check(messages: list[ChatMessage]) -> list[ChatMessage]:
    limit = settings.CHAT_MAX_MESSAGE_CHARS * 16
    if sum(len(message.text()) for message in messages) > limit:
        raise PydanticCustomError("too_many_characters", f"hold more than {limit:,} characters in all")
    if not any(message.role == "user" for message in messages):
        raise PydanticCustomError("no_user_message", "must include at least one message with role 'user'")
    return messages


Messages = Annotated[
    list[ChatMessage],
    Field(min_length=1, json_schema_extra={"contains": {"properties": {"role": {"const": "user"}}}}),
    AtMostSetting("API_MAX_MESSAGES", items="messages"),
    AfterValidator(_messages_check),
]
ModelId = Annotated[str, Field(pattern=r"\S", description="A model id from GET /v1/models.")]
Tokens = Annotated[int, Field(ge=1), AtMostSetting("INFERENCE_MAX_TOKENS_LIMIT")] | None
Penalty = Annotated[float, Field(ge=-2, le=2)] | None
StopSequence = Annotated[str, Field(min_length=1)]
Stop = Annotated[
    Annotated[StopSequence, Tag("string")]
    | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES), Tag("array")],
    either(f"must be a string or a list of up to {MAX_STOP_SEQUENCES} strings"),
]


class StreamOptions(RequestBody):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ResponseFormat(RequestBody):
    type: Literal["text"]


def _no_logit_bias(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value:
        raise PydanticCustomError("unsupported", "is not supported by Parley's engine; leave it out")
    return value


class ChatCompletionRequest(RequestBody):
    """OpenAI's chat completion body, as far as Parley's models can honour it."""

    model_config = ConfigDict(
        json_schema_extra={
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
            ]
        }
    )

    model: ModelId
    messages: Messages
    stream: bool | None = None
    stream_options: Annotated[StreamOptions | None, Field(description="Only with stream: true.")] = None
    max_tokens: Tokens = None
    max_completion_tokens: Tokens = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, description="0 means greedy decoding.")] | None = None
    stop: Stop | None = None
    seed: Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])] | None = None
    n: (
        Annotated[int, Field(ge=1, description="More than 1 only without streaming."), AtMostSetting("API_MAX_CHOICES")]
        | None
    ) = None
    logprobs: Annotated[
        bool | None,
        Field(
            description="Report each generated token's log probability under the model's own "
            "distribution (before temperature, top_p and penalties)."
        ),
    ] = None
    top_logprobs: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_TOP_LOGPROBS,
            description="How many of the most likely tokens to list at each position; needs logprobs: true.",
        ),
    ] = None
    store: Annotated[bool | None, Field(description="Keep the completion as a transcript.")] = None
    presence_penalty: Annotated[
        Penalty, Field(description="Lowers, once, the logit of every token the reply already has.")
    ] = None
    frequency_penalty: Annotated[
        Penalty, Field(description="Lowers the logit of every token the reply already has, per time it appeared.")
    ] = None
    logit_bias: Annotated[
        dict[str, Any] | None, AfterValidator(_no_logit_bias), Field(json_schema_extra={"maxProperties": 0})
    ] = None
    response_format: ResponseFormat | None = None
    # Accepted and without effect on generation (bookkeeping for the caller; one service tier).
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: Any = None
    parallel_tool_calls: Any = None

    @model_validator(mode="after")
    def _combinations(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise refusal("stream_options", "is only allowed when 'stream' is true")
        if self.stream and (self.n or 1) > 1:
            raise refusal("n", "must be 1 with 'stream': true (streaming returns one choice)")
        if self.top_logprobs is not None and not self.logprobs:
            raise refusal("top_logprobs", "needs 'logprobs': true")
        return self


class SeedChatRequest(RequestBody):
    """The seed API's body: ``{"model", "messages", "stream"}`` and nothing else."""

    model: ModelId
    messages: Messages
    stream: bool | None = None


# --- Fine-tuning jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedByService:
    """Bounds the fine-tuning services check, for the API and the admin alike, naming the
    hyperparameter: the schema states them (``bounds``, or the ``setting`` holding them)
    and validating the body leaves them to the service."""

    bounds: tuple[float, float] = (0, 0)
    setting: str = ""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        low, high = getattr(settings, self.setting) if self.setting else self.bounds
        json_schema["minimum"], json_schema["maximum"] = low, high
        return json_schema


AUTO = Annotated[Literal["auto"], Tag("string")]
AutoEpochs = Annotated[
    AUTO | Annotated[int, CheckedByService(N_EPOCHS_RANGE), Tag("integer")],
    either('must be "auto" or a whole number'),
]
AutoBatchSize = Annotated[
    AUTO | Annotated[int, CheckedByService(BATCH_SIZE_RANGE), Tag("integer")],
    either('must be "auto" or a whole number'),
]
AutoMultiplier = Annotated[
    AUTO | Annotated[float, CheckedByService(LEARNING_RATE_MULTIPLIER_RANGE), Tag("number")],
    either('must be "auto" or a number', json_number),
]
AutoBudget = Annotated[
    AUTO | Annotated[int, CheckedByService(setting="FINETUNE_BUDGET_RANGE"), Tag("integer")],
    either('must be "auto" or a whole number of seconds'),
    Field(description='Parley extension: seconds "auto" epochs may train; "auto": FINETUNE_TIME_BUDGET_SECONDS.'),
]
AutoEpochCap = Annotated[
    AUTO | Annotated[int, CheckedByService(setting="FINETUNE_MAX_EPOCHS_RANGE"), Tag("integer")],
    either('must be "auto" or a whole number'),
    Field(description='Parley extension: cap on "auto" epochs; "auto": FINETUNE_MAX_EPOCHS.'),
]
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "time_budget_seconds", "max_epochs")


class Hyperparameters(RequestBody):
    """OpenAI's three, then Parley's bounds on "auto" epochs; null is "auto"."""

    n_epochs: AutoEpochs | None = None
    batch_size: AutoBatchSize | None = None
    learning_rate_multiplier: AutoMultiplier | None = None
    time_budget_seconds: AutoBudget | None = None
    max_epochs: AutoEpochCap | None = None


class Supervised(RequestBody):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: Hyperparameters | None = None


class Method(RequestBody):
    model_config = ConfigDict(extra="ignore")

    type: Literal["supervised"] = "supervised"
    supervised: Supervised | None = None


class TrainingTypeChoice(RequestBody):
    type: str


TRAINING_TYPES = ("lora", "full")
TrainingTypeIn = Annotated[
    Annotated[TrainingTypeChoice, Tag("object")] | Annotated[str, Tag("string")],
    either('must be {"type": "lora"} or {"type": "full"}'),
    Field(
        description='Parley extension: {"type": "lora"} or {"type": "full"} (or just the string); default FINETUNE_METHOD.'
    ),
]


class CreateFineTuningJobRequest(RequestBody):
    model: Annotated[str, Field(min_length=1, description="A base model or a fine-tuned model to train further.")]
    training_file: Annotated[str, Field(min_length=1)]
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    suffix: Annotated[str | None, Field(description="Up to 40 lowercase letters, digits and hyphens.")] = None
    training_type: TrainingTypeIn | None = None
    integrations: Annotated[Any, Field(description="Accepted and ignored.")] = None
    metadata: Annotated[Any, Field(description="Accepted and ignored.")] = None

    def chosen_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters asked for, in ``method`` or at the top; "auto" for any left out."""
        chosen = self.hyperparameters
        if self.method is not None:
            chosen = self.method.supervised.hyperparameters if self.method.supervised else None
        values = chosen.model_dump() if chosen else {}
        return {name: "auto" if values.get(name) is None else values[name] for name in HYPERPARAMETERS}

    def chosen_training_type(self) -> str | None:
        """lora or full; None leaves it to FINETUNE_METHOD."""
        chosen = self.training_type.type if isinstance(self.training_type, TrainingTypeChoice) else self.training_type
        if chosen is None:
            return None
        if chosen.lower() not in TRAINING_TYPES:
            raise invalid("training_type", """'training_type' must be {"type": "lora"} or {"type": "full"}.""")
        return chosen.lower()


# --- From a body to a typed request ----------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request. Roles are normalised to system/user/assistant."""

    model: str
    messages: list[prompt.ChatMessage]
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


Body = TypeVar("Body", bound=BaseModel)


def validate_body(model: type[Body], body: dict[str, Any]) -> Body:
    """``body`` as a ``model``, or the ApiError that names its first fault."""
    present = {name: value for name, value in body.items() if not (name in UNSUPPORTED and value is None)}
    try:
        return model.model_validate(present)
    except ValidationError as exc:
        raise api_error(exc) from None


def normalise_roles(messages: list[prompt.ChatMessage]) -> list[prompt.ChatMessage]:
    """One leading system message (system and developer texts joined), then the turns.

    Chat templates accept a system message only at the start, so instructions given
    later in the list are folded into it, in order.
    """
    system = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"])
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    return ([{"role": "system", "content": system}] if system else []) + turns


def _chat_messages(messages: list[ChatMessage]) -> list[prompt.ChatMessage]:
    return normalise_roles([{"role": message.role, "content": message.text()} for message in messages])


def _default_max_tokens() -> int:
    return min(settings.INFERENCE_DEFAULT_MAX_TOKENS, settings.INFERENCE_MAX_TOKENS_LIMIT)


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """Validate an OpenAI chat completion body; raise ApiError naming the first bad field."""
    chat = validate_body(ChatCompletionRequest, body)
    temperature = 1.0 if chat.temperature is None else chat.temperature
    top_p = 1.0 if chat.top_p is None else chat.top_p
    if top_p == 0.0:  # only the most likely token survives: the same as greedy decoding
        temperature, top_p = 0.0, 1.0
    return ChatRequest(
        model=chat.model,
        messages=_chat_messages(chat.messages),
        stream=bool(chat.stream),
        include_usage=chat.stream_options is not None and chat.stream_options.include_usage,
        max_tokens=chat.max_completion_tokens or chat.max_tokens or _default_max_tokens(),
        temperature=temperature,
        top_p=top_p,
        stop=_stop(chat.stop),
        seed=chat.seed,
        n=chat.n or 1,
        store=bool(chat.store),
        presence_penalty=chat.presence_penalty or 0.0,
        frequency_penalty=chat.frequency_penalty or 0.0,
        logprobs=bool(chat.logprobs),
        top_logprobs=chat.top_logprobs or 0,
    )


def parse_seed_request(body: dict[str, Any]) -> ChatRequest:
    """The seed API's body, with the server's default length and temperature."""
    seed = validate_body(SeedChatRequest, body)
    return ChatRequest(
        model=seed.model,
        messages=_chat_messages(seed.messages),
        stream=bool(seed.stream),
        max_tokens=_default_max_tokens(),
        temperature=settings.INFERENCE_DEFAULT_TEMPERATURE,
    )


# --- Validation errors in OpenAI's shape -----------------------------------------------

# What each kind of pydantic's own faults says after the field's name, filled from the
# error's context; Parley's own (PydanticCustomError) say it in their message.
FAULTS = {
    "missing": "is required",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "literal_error": "must be {expected}",
    "less_than_equal": "must be at most {le}",
    "greater_than_equal": "must be at least {ge}",
    "too_short": "must hold at least {min_length} item(s)",
    "too_long": "must hold at most {max_length} item(s)",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} character(s) long",
    "string_pattern_mismatch": "must match the pattern {pattern}",
}


def error_param(location: tuple[int | str, ...]) -> str:
    """``("messages", 2, "content")`` as ``messages[2].content``, without union branch tags."""
    param = ""
    for part in location:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part not in UNION_TAGS:
            param += f".{part}" if param else part
    return param


def _fault(error: Any) -> str:
    context = {
        name: f"{value:g}" if isinstance(value, float) else value for name, value in (error.get("ctx") or {}).items()
    }
    if error["type"] in FAULTS:
        text = FAULTS[error["type"]]
        try:
            return text.format(**context)
        except (KeyError, IndexError):
            return text.split(" {")[0]
    return str(error["msg"])


def api_error(exc: ValidationError) -> ApiError:
    """The first fault of a body as a 400 naming its field: an unknown or unsupported
    field first (as OpenAI does), then the others in the order of the model's fields."""
    errors = exc.errors(include_url=False, include_input=False)
    unknown = [error for error in errors if error["type"] == "extra_forbidden" and len(error["loc"]) == 1]
    if unknown:
        name = str(unknown[0]["loc"][0])
        if name in UNSUPPORTED:
            return invalid(name, UNSUPPORTED[name], code="unsupported_parameter")
        return invalid(name, f"Unrecognized request argument supplied: {name}.", code="unknown_parameter")
    error = errors[0]
    location = tuple(error["loc"])
    field = (error.get("ctx") or {}).get("field")
    if isinstance(field, str):
        location += (field,)
    param = error_param(location) or "body"
    if error["type"] == "extra_forbidden":
        return invalid(param, f"Unrecognized field '{param}'.", code="unknown_parameter")
    return invalid(param, f"'{param}' {_fault(error)}.")
