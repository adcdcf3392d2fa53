"""The least a relay in front of a vLLM server can do, for the gateway's CPU comparison.

A bare ASGI app under uvicorn (same server, loop and HTTP parser as the gateway) that forwards the
body of `POST /v1/chat/completions` to the upstream's `/v1/chat/completions` over one pooled
aiohttp session, with the upstream's key, and returns its answer whole: no auth, no policy, no
tokenizer, no safety, no audit, no metrics, no tracing. `bench_overhead.py` reads the CPU time of
this process and of the gateway per request; the ratio is what the full pipeline costs on top of
relaying bytes.

    python loadtests/bare_relay.py --port 9101 --upstream http://127.0.0.1:9001 [--api-key KEY]
"""

from __future__ import annotations

import argparse
from typing import Any


class BareRelay:
    def __init__(self, upstream: str, api_key: str | None = None) -> None:
        self.url = upstream.rstrip("/") + "/v1/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.session: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["path"] == "/health":
            await _send(send, 200, b"", b"text/plain")
            return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await _send(send, 404, b'{"error":{"message":"Not Found"}}')
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as r:
                answer = await r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "application/json").encode()
        except Exception:  # any upstream failure is a 502 here
            await _send(send, 502, b'{"error":{"message":"upstream failed"}}')
            return
        await _send(send, status, answer, ctype)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        import aiohttp

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256),
                    timeout=aiohttp.ClientTimeout(total=300),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


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
    p.add_argument("--port", type=int, default=9101)
    p.add_argument("--upstream", required=True, help="the vLLM-API server, e.g. http://h:port")
    p.add_argument("--api-key", default=None, help="the upstream's key")
    a = p.parse_args()
    app = BareRelay(a.upstream, a.api_key)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
