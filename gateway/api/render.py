"""OpenAI response bodies and server-sent events, rendered with orjson."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.service import Completion

__all__ = [
    "DONE",
    "chat_body",
    "chat_chunk",
    "completion_body",
    "completion_chunk",
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


def models_body(models: list[tuple[str, str | None]], created: int) -> dict[str, Any]:
    data = []
    for model_id, parent in models:
        item: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "tunegate",
        }
        if parent is not None:
            item["parent"] = parent
        data.append(item)
    return {"object": "list", "data": data}
