"""OpenAI response bodies and server-sent events, rendered with orjson."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from gateway.api.errors import ErrorResponse, error_responses
from gateway.api.wire import ChatRequest, CompletionRequest, request_body
from gateway.errors import GatewayError
from gateway.service import Completion

__all__ = [
    "CHAT_DOC",
    "COMPLETION_DOC",
    "DONE",
    "MODELS_DOC",
    "MODEL_DOC",
    "chat_body",
    "chat_chunk",
    "completion_body",
    "completion_chunk",
    "model_body",
    "models_body",
    "sse",
    "sse_error",
    "usage",
]

DONE = b"data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_error(exc: GatewayError) -> bytes:
    return sse(exc.body())


def chat_body(rid: str, created: int, model: str, c: Completion) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.text, "refusal": None},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(c.prompt_tokens, c.completion_tokens),
    }


def chat_chunk(
    rid: str, created: int, model: str, delta: dict[str, str], finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def completion_body(rid: str, created: int, model: str, c: Completion) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(c.prompt_tokens, c.completion_tokens),
    }


def completion_chunk(
    rid: str, created: int, model: str, text: str, finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
    }


def model_body(model_id: str, parent: str | None, created: int) -> dict[str, Any]:
    """One model object; a tune names the base model it adapts as its `parent`."""
    item: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "tunegate",
    }
    if parent is not None:
        item["parent"] = parent
    return item


def models_body(models: list[tuple[str, str | None]], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(m, parent, created) for m, parent in models]}


# The OpenAPI document of these bodies. The models document the wire shape only: bodies are
# built as dicts above (fast), and the schemathesis test checks that they conform.


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


FinishReason = Literal["stop", "length", "content_filter"]


class Usage(_Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Doc):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None


class ChatChoice(_Doc):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None


class ChatCompletion(_Doc):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Doc):
    role: Literal["assistant"] = "assistant"
    content: str = ""


class ChatChunkChoice(_Doc):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None


class ChatCompletionChunk(_Doc):
    """One event of a stream; the last one (`stream_options.include_usage`) has no choices."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class TextChoice(_Doc):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: None


class TextCompletion(_Doc):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class TextChunkChoice(_Doc):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None


class TextCompletionChunk(_Doc):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChunkChoice]
    usage: Usage | None = None


class Model(_Doc):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    parent: str | None = None


class ModelList(_Doc):
    object: Literal["list"]
    data: list[Model]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return request_body(model)["requestBody"]["content"]["application/json"]["schema"]


def _event_stream(chunk: type[BaseModel]) -> dict[str, Any]:
    """`text/event-stream`: each event's `data` is a chunk, an error envelope (a stream that
    fails after its first event) or the final `[DONE]`."""
    payload = {"anyOf": [_schema(chunk), _schema(ErrorResponse)]}
    data = {
        "anyOf": [
            {"type": "string", "const": "[DONE]"},
            {"type": "string", "contentMediaType": "application/json", "contentSchema": payload},
        ]
    }
    event = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {"text/event-stream": {"itemSchema": event}}


_GENERATION_ERRORS = error_responses(400, 401, 404, 413, 429, 502, 503, 504)


def _generation_doc(
    request: type[BaseModel], answer: type[BaseModel], chunk: type[BaseModel]
) -> dict[str, Any]:
    return {
        "openapi_extra": request_body(request),
        "responses": {
            200: {
                "model": answer,
                "description": "The answer; a stream of server-sent events when `stream` is true",
                "content": _event_stream(chunk),
            },
            **_GENERATION_ERRORS,
        },
    }


# Keyword arguments for the routes' decorators (`@router.post(path, **CHAT_DOC)`).
CHAT_DOC: dict[str, Any] = _generation_doc(ChatRequest, ChatCompletion, ChatCompletionChunk)
COMPLETION_DOC: dict[str, Any] = _generation_doc(
    CompletionRequest, TextCompletion, TextCompletionChunk
)
MODELS_DOC: dict[str, Any] = {
    "responses": {
        200: {"model": ModelList, "description": "The models the caller may use"},
        **error_responses(401, 503),
    }
}
MODEL_DOC: dict[str, Any] = {
    "responses": {
        200: {"model": Model, "description": "A model the caller may use"},
        **error_responses(401, 404, 503),
    }
}
