"""OpenAI chat-completions request model (the subset Embassy serves), free of heavy imports.

Fields follow the OpenAI spec's order. Deviations: `n` must be 1; tools, function calls
and logprobs are refused with 400 rather than silently ignored; content parts may only be
text. Unknown fields are ignored, as OpenAI's SDKs add new ones over time.

`response_format` (`text`, `json_object`, `json_schema`) is enforced by the engine's
structured-output decoding (vLLM's `StructuredOutputsParams`): the answer is valid JSON,
matching the schema when one is given.

Extensions, named as in vLLM's OpenAI server so clients written for it keep working:
`ignore_eos` (generate until `max_tokens` or a stop string) and `min_tokens` (no end of
sequence before that many tokens). Load tests and benchmarks use them for fixed lengths.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from embassy.errors import InvalidRequest


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _bounded_depth(cls, v: dict) -> dict:
        # The engine compiles the schema into a grammar; a deep one costs it dearly.
        if _depth(v) > MAX_SCHEMA_DEPTH:
            raise ValueError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        return v


MAX_SCHEMA_DEPTH = 32


def _depth(value: object, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH:  # stop early: the caller only needs "too deep"
        return level
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((_depth(c, level + 1) for c in children), default=level)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type 'json_schema' and allowed only with it")
        return self

    def canonical(self) -> str | None:
        """One string per distinct constraint (the cache scope and the engine read it); None
        for free text."""
        if self.type == "text":
            return None
        body = {"type": self.type}
        if self.json_schema is not None:
            body["schema"] = self.json_schema.json_schema
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "audio",
                "prediction")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1, max_length=128)
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Literal[1] | None = None
    presence_penalty: float | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: str | None = Field(None, max_length=256)
    response_format: ResponseFormat | None = None
    # vLLM extensions (see the module docstring).
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> "ChatCompletionRequest":
        extra = self.model_extra or {}
        for name in _UNSUPPORTED:
            if extra.get(name) not in (None, [], {}):
                raise ValueError(f"'{name}' is not supported by this deployment")
        if self.logprobs:
            raise ValueError("'logprobs' is not supported by this deployment")
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return self

    @property
    def completion_limit(self) -> int | None:
        """`max_completion_tokens` wins over the deprecated `max_tokens`, as in OpenAI's API."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def parse_chat_request(data: object) -> ChatCompletionRequest:
    """Validate a decoded JSON body.

    Raises:
        InvalidRequest: naming the first offending field in `param`.
    """
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
        # Pydantic's union branches ("str", "list[TextPart]") are noise to the caller.
        loc = [p for p in loc if p not in ("str", "list[TextPart]", "int", "constrained-int")]
        param = ".".join(loc) or None
        msg = first["msg"].removeprefix("Value error, ")
        raise InvalidRequest(f"Invalid value for '{param}': {msg}" if param else msg,
                             param=param) from None
    limit = request.completion_limit
    if limit is not None and request.min_tokens > limit:
        raise InvalidRequest(f"Invalid value for 'min_tokens': {request.min_tokens} is more than "
                             f"the {limit} tokens allowed by 'max_tokens'.", param="min_tokens")
    return request
