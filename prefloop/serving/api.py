"""Request and response bodies of the OpenAI chat API, field for field (as vLLM's
`vllm/entrypoints/openai/protocol.py` mirrors them), and OpenAI's error object.

Requests are validated strictly from the JSON bytes: a wrong type or an unknown field is a 400
that names the field (`param`), as OpenAI answers. Fields prefloop does not implement are not
accepted silently: `n` must be 1, and tools, logprobs and the like are unknown fields.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

METADATA_MAX_PAIRS = 16  # OpenAI's limits on `metadata`
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512
STOP_MAX = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    # vLLM's extension: generate exactly max_tokens (benchmarks compare equal lengths with it).
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > STOP_MAX:
            raise ValueError(f"at most {STOP_MAX} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > METADATA_MAX_PAIRS:
            raise ValueError(f"at most {METADATA_MAX_PAIRS} key-value pairs")
        for key, text in value.items():
            if not key or len(key) > METADATA_KEY_MAX:
                raise ValueError(f"keys must be 1 to {METADATA_KEY_MAX} characters, got {key[:80]!r}")
            if len(text) > METADATA_VALUE_MAX:
                raise ValueError(f"values must be at most {METADATA_VALUE_MAX} characters (key {key!r})")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class BadRequest(Exception):
    """A request that fails validation: `param` names the field, as in OpenAI's error object."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request from raw JSON bytes; raises BadRequest naming the first bad field."""
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise BadRequest(f"request body is not valid JSON: {first['msg']}") from None
        # OpenAI names a field like `messages[0].role`; pydantic gives ("messages", 0, "role", "str") for unions.
        parts: list[str] = []
        for item in first["loc"]:
            if isinstance(item, int):
                parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            elif item in _TYPE_TAGS or "[" in item:
                break  # the name of a union member's type, not a field
            else:
                parts.append(item)
        param = ".".join(parts) or None
        if first["type"] == "extra_forbidden":
            message = f"unknown or unsupported field {param!r}"
        elif first["type"] == "missing":
            message = f"{param} is required"
        else:
            message = f"{param}: {first['msg']}" if param else first["msg"]
        raise BadRequest(message, param) from None


# --- responses ---------------------------------------------------------------------------


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "Usage":
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "prefloop"
    # Not in OpenAI's object: the registry status (production, canary, candidate, …), for the arena.
    status: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# OpenAI's error `type` per HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
    405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
    500: "server_error", 502: "upstream_error", 503: "service_unavailable", 504: "timeout",
}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> ErrorResponse:
    return ErrorResponse(error=ErrorInfo(message=message, type=ERROR_TYPES.get(status, "server_error"), param=param, code=code))
