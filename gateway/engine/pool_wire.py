"""What the engine pool says to a vLLM OpenAI server and reads back: the request body, a
streamed answer (SSE events) or a whole one (one JSON body), error bodies and `/metrics`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.engine.types import EngineRequest, Output
from gateway.errors import ServerError

__all__ = [
    "FINISHES",
    "UpstreamError",
    "message",
    "read_stream",
    "read_whole",
    "request_body",
    "vllm_load",
]

FINISHES = ("stop", "length")


class UpstreamError(ServerError):
    """An engine server failed in a way the client can do nothing about."""

    status = 502
    default_code = "upstream_error"


def request_body(request: EngineRequest, served_model_name: str, *, whole: bool) -> bytes:
    """A `/v1/completions` body with the prompt as token ids; streamed unless `whole`."""
    out: dict[str, Any] = {
        "model": request.adapter.name if request.adapter else served_model_name,
        "prompt": request.prompt_token_ids,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "stream": not whole,
    }
    if not whole:
        out["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    if request.stop:
        out["stop"] = list(request.stop)
    if request.seed is not None:
        out["seed"] = request.seed
    if request.structured:
        out["structured_outputs"] = request.structured
    if request.logit_bias:
        out["logit_bias"] = {str(k): v for k, v in request.logit_bias.items()}
    if request.cache_salt:
        out["cache_salt"] = request.cache_salt
    return orjson.dumps(out)


def _finish(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    if reason is not None and reason not in FINISHES:
        raise UpstreamError(f"The engine server ended the answer ({reason}).")
    return reason  # type: ignore[no-any-return]


async def read_stream(chunks: AsyncIterator[bytes], prompt_tokens: int) -> AsyncIterator[Output]:
    """Outputs from an SSE answer. Whatever arrived in one read becomes one output: events that
    came together are relayed together, so a burst of tokens costs one pass through the
    pipeline. Reads on to the end, so the connection can go back to the pool."""
    completion = 0
    finished = False
    pending = b""
    async for data in chunks:
        *lines, pending = (pending + data).split(b"\n")
        texts: list[str] = []
        finish = None
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                continue
            event = orjson.loads(payload)
            if "error" in event:
                raise UpstreamError(message(event, "The engine server failed mid-answer."))
            usage = event.get("usage")
            if usage:
                prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
                completion = usage.get("completion_tokens", completion)
            for choice in event.get("choices") or ():
                reason = _finish(choice)
                texts.append(choice.get("text") or "")
                finish = finish or reason
        if texts and not finished:
            finished = finish is not None
            yield Output("".join(texts), completion, prompt_tokens, finish)
    if not finished:
        raise UpstreamError("The engine server ended the stream before the answer did.")


def read_whole(data: bytes, prompt_tokens: int) -> Output:
    """The one output of a whole (non-streamed) answer."""
    try:
        event = orjson.loads(data)
        choice = event["choices"][0]
        text = choice.get("text") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("The engine server sent an answer that is not a completion.") from None
    finish = _finish(choice)
    if finish is None:
        raise UpstreamError("The engine server sent an answer without a finish reason.")
    usage = event.get("usage") or {}
    return Output(
        text,
        usage.get("completion_tokens", 0),
        usage.get("prompt_tokens", prompt_tokens),
        finish,
    )


def message(body: Any, default: str) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(body.get("message"), str):
            return body["message"][:500]
    return default


def vllm_load(text: str) -> tuple[int, int, float]:
    """Running and waiting requests and KV cache usage from a vLLM server's `/metrics`."""
    running = waiting = 0.0
    kv = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running{"):
            running += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:num_requests_waiting{"):
            waiting += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:kv_cache_usage_perc{"):
            kv = max(kv, float(line.rsplit(" ", 1)[1]))
    return int(running), int(waiting), kv
