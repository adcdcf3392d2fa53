"""OpenAI request bodies as pydantic models. Unknown fields are ignored, never forwarded."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = ["ChatMessage", "ChatRequest", "CompletionRequest", "StreamOptions", "request_body"]

Temperature = Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Wire):
    include_usage: bool = False


MAX_SCHEMA_DEPTH = 16
MAX_SCHEMA_BYTES = 16384


def _depth(node: Any, level: int = 0) -> int:
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level)
    return level


class JsonSchemaSpec(_Wire):
    name: str = Field("response", max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _usable(cls, value: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # an integer past 64 bits: no engine could take it
            raise ValueError("the schema holds an integer outside the 64-bit range") from None
        if _depth(value) > MAX_SCHEMA_DEPTH or size > MAX_SCHEMA_BYTES:
            raise ValueError(
                f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels or "
                f"larger than {MAX_SCHEMA_BYTES} bytes"
            )
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema ({exc.message})") from None
        return value


class ResponseFormat(_Wire):
    model_config = ConfigDict(
        json_schema_extra={  # documents `_schema_given`
            "if": {"properties": {"type": {"const": "json_schema"}}},
            "then": {
                "required": ["json_schema"],
                "properties": {"json_schema": {"type": "object"}},
            },
        }
    )

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("`json_schema` is required when type is `json_schema`")
        return self

    def structured(self) -> dict[str, Any] | None:
        """The engine's structured-output constraint for this format."""
        if self.type == "json_object":
            return {"json_object": True}
        if self.type == "json_schema" and self.json_schema is not None:
            return {"json": self.json_schema.json_schema}
        return None


# OpenAI parameters accepted with one value only: the 400 for another value says why, in place
# of the validator's "Input should be 1".
ONE_VALUE_ONLY = {
    "n": "only one choice (1) is returned",
    "best_of": "only 1 is supported",
    "logprobs": "log probabilities are not returned",
    "echo": "the prompt is not echoed",
    "suffix": "a suffix is not supported",
    "tools": "tool calling is not supported",
}

# Engine-specific fields a client may not set: prompt templates and embeddings, cache salts,
# the engine's own structured-output and logits controls. Named in a 400, never forwarded.
REFUSED_FIELDS = (
    "chat_template",
    "chat_template_kwargs",
    "prompt_embeds",
    "cache_salt",
    "mm_processor_kwargs",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "guided_choice",
    "allowed_token_ids",
    "logits_processors",
    "kv_transfer_params",
    "vllm_xargs",
    "priority",
)
BiasValue = Annotated[float, Field(ge=-100.0, le=100.0, allow_inf_nan=False)]
TOKEN_ID = r"^[0-9]{1,9}$"
# The documented shape of `stop` (the validator below gives the clearer 400).
_STOP_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4},
        {"type": "null"},
    ]
}


def _document_refused(schema: dict[str, Any]) -> None:
    """The refused fields, in the document: a property that may not be present."""
    schema.setdefault("properties", {}).update(dict.fromkeys(REFUSED_FIELDS, False))


class _Sampling(_Wire):
    model_config = ConfigDict(json_schema_extra=_document_refused)

    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: PositiveInt | None = None
    n: Literal[1] | None = None
    stop: Annotated[
        str | Annotated[list[str], Field(max_length=4)] | None, WithJsonSchema(_STOP_SCHEMA)
    ] = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = Field(None, max_length=256)
    logit_bias: (
        Annotated[
            dict[str, BiasValue],
            Field(max_length=300, json_schema_extra={"propertyNames": {"pattern": TOKEN_ID}}),
        ]
        | None
    ) = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_engine_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in REFUSED_FIELDS:
                if name in data:
                    raise PydanticCustomError(
                        "refused_field", "`{param}` is not accepted by this API", {"param": name}
                    )
        return data

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isascii() or not key.isdigit() or len(key) > 9:
                raise ValueError("logit_bias keys must be token ids (non-negative integers)")
        return value

    def bias(self) -> dict[int, float] | None:
        return {int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else value or []
        if any(not s for s in items):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


# Documents `_some_content`: some message has text that is not only whitespace.
_SOME_CONTENT = {
    "required": ["content"],
    "properties": {
        "content": {
            "anyOf": [
                {"type": "string", "pattern": r"\S"},
                {"type": "array", "contains": {"properties": {"text": {"pattern": r"\S"}}}},
            ]
        }
    },
}


class ChatRequest(_Sampling):
    messages: Annotated[
        list[ChatMessage], Field(min_length=1, json_schema_extra={"contains": _SOME_CONTENT})
    ]
    max_completion_tokens: PositiveInt | None = None
    response_format: ResponseFormat | None = None
    logprobs: Literal[False] | None = None
    tools: Annotated[list[Any], Field(max_length=0)] | None = None

    @field_validator("messages")
    @classmethod
    def _some_content(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.text().strip() for m in value):
            raise ValueError("the messages have no content")
        return value

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: Literal[False] | None = None
    logprobs: None = None
    best_of: Literal[1] | None = None
    suffix: None = None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_budget(self) -> int | None:
        return self.max_tokens


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def request_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body the route parses itself (for a 400, never a 422):
    the model's schema, self-contained."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": _inline(schema, schema.get("$defs", {}))}},
        }
    }
