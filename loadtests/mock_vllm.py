"""A small server that speaks the vLLM OpenAI API, for benchmarks and pool tests.

It answers `/v1/completions` and `/v1/chat/completions` (streamed or whole) with a fixed number
of tokens after a fixed delay, and keeps the LoRA control endpoints (`/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`), `/v1/models`, `/health` and `/metrics` the way vLLM does, so the
gateway's engine pool can be exercised without a model. Every response is built by hand with
orjson on a bare ASGI app: the upstream must cost as little as possible so a benchmark measures
the gateway.

    python loadtests/mock_vllm.py --port 9001 [--delay-ms 50] [--tokens 16] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import orjson

MODEL = "tunegate-demo-base"


class MockVLLM:
    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        tokens: int = 16,
        api_key: str | None = None,
        gap_s: float = 0.0,
        max_model_len: int = 512,
        name: str = "mock",
    ) -> None:
        self.delay_s = delay_s
        self.gap_s = gap_s
        self.tokens = tokens
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.name = name
        self.adapters: dict[str, str] = {}
        self.healthy = True
        self.fail_status: int | None = None  # answer generation with this status
        self.drop_after: int | None = None  # cut streams after this many chunks (whole: the body)
        self.served: list[str] = []  # the model of every generation request
        self.last_headers: dict[str, str] = {}
        self.last_request: dict[str, Any] = {}
        self.running = 0
        self._ids = itertools.count()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        if path == "/health":
            await _send(send, 200 if self.healthy else 503, b"")
            return
        if path == "/metrics":
            text = (
                f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} {self.running}\n'
                f'vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 0.0\n'
                f'vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.1\n'
            )
            await _send(send, 200, text.encode(), b"text/plain")
            return
        if path == "/v1/traces" and method == "POST":  # an OTLP/HTTP sink: spans are dropped
            while (await receive()).get("more_body"):
                pass
            await _send(send, 200, b"", b"application/x-protobuf")
            return
        if (
            self.api_key
            and (b"authorization", f"Bearer {self.api_key}".encode()) not in scope["headers"]
        ):
            await _send(send, 401, orjson.dumps({"error": {"message": "Unauthorized"}}))
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/v1/models" and method == "GET":
            await _send(send, 200, orjson.dumps(self._models()))
        elif path == "/v1/load_lora_adapter":
            req = orjson.loads(body)
            if req["lora_name"] in self.adapters:
                msg = f"The lora adapter '{req['lora_name']}' has already been loaded."
                await _send(send, 400, orjson.dumps({"error": {"message": msg, "code": 400}}))
                return
            self.adapters[req["lora_name"]] = req["lora_path"]
            await _send(send, 200, b"Success", b"text/plain")
        elif path == "/v1/unload_lora_adapter":
            self.adapters.pop(orjson.loads(body)["lora_name"], None)
            await _send(send, 200, b"Success", b"text/plain")
        elif path in ("/v1/completions", "/v1/chat/completions") and method == "POST":
            self.last_headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.last_request = orjson.loads(body)
            await self._generate(send, self.last_request, chat=path.endswith("chat/completions"))
        else:
            await _send(send, 404, orjson.dumps({"error": {"message": "Not Found"}}))

    def _models(self) -> dict[str, Any]:
        base = {"id": MODEL, "object": "model", "parent": None, "max_model_len": self.max_model_len}
        loras = [
            {"id": n, "object": "model", "parent": MODEL, "root": p}
            for n, p in self.adapters.items()
        ]
        return {"object": "list", "data": [base, *loras]}

    async def _generate(self, send: Any, req: dict[str, Any], *, chat: bool) -> None:
        model = req.get("model")
        if model != MODEL and model not in self.adapters:
            msg = f"The model `{model}` does not exist."
            error = {"error": {"message": msg, "type": "NotFoundError", "code": 404}}
            await _send(send, 404, orjson.dumps(error))
            return
        if self.fail_status is not None:
            await _send(send, self.fail_status, orjson.dumps({"error": {"message": "failing"}}))
            return
        self.served.append(model)
        self.running += 1
        try:
            await self._answer(send, req, model, chat)
        finally:
            self.running -= 1

    async def _answer(self, send: Any, req: dict[str, Any], model: str, chat: bool) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        n = min(int(req.get("max_tokens") or self.tokens), self.tokens)
        prompt = req.get("prompt")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else 8
        rid = f"cmpl-{self.name}-{next(self._ids)}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        if not req.get("stream"):
            if self.drop_after is not None:  # the headers go out, then the server cuts the body
                start = {"type": "http.response.start", "status": 200}
                await send({**start, "headers": [(b"content-length", b"100")]})
                raise ConnectionResetError("dropped by the mock")
            text = "".join(f" w{i}" for i in range(n))
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n}
            usage["total_tokens"] = prompt_tokens + n
            payload = {"id": rid, "object": obj, "created": created, "model": model}
            await _send(send, 200, orjson.dumps({**payload, "choices": [choice], "usage": usage}))
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        kind = "chat.completion.chunk" if chat else "text_completion"
        for i in range(n):
            if self.drop_after is not None and i >= self.drop_after:
                raise ConnectionResetError("dropped by the mock")  # the server cuts the stream
            finish = "length" if i == n - 1 else None
            text = f" w{i}"
            choice = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": text}
            else:
                choice["text"] = text
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": i + 1}
            chunk = {"id": rid, "object": kind, "created": created, "model": model}
            event = {**chunk, "choices": [choice], "usage": usage}
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(event) + b"\n\n",
                    "more_body": True,
                }
            )
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _send(send: Any, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--gap-ms", type=float, default=0.0)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--api-key", default=None)
    p.add_argument("--max-model-len", type=int, default=512, help="the context it reports")
    a = p.parse_args()
    app = MockVLLM(
        delay_s=a.delay_ms / 1000,
        gap_s=a.gap_ms / 1000,
        tokens=a.tokens,
        api_key=a.api_key,
        max_model_len=a.max_model_len,
    )
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
