"""A client that hangs up mid-stream, against the app served by a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket

import httpx
import orjson
import uvicorn

from gateway.api import create_app
from gateway.audit.file_sink import audit_files
from tests.api.conftest import auth, write_config


async def test_hang_up_mid_stream_frees_slot_and_is_audited(tmp_path, engine):
    settings = write_config(tmp_path)
    policy = settings.policies_dir / "tenants.yaml"
    policy.write_text(
        policy.read_text().replace(
            "    tunes: [support]\n", "    tunes: [support]\n    limits: {max_concurrent: 1}\n"
        )
    )
    original = engine.stream
    aborted = asyncio.Event()

    async def endless(request):
        try:
            async for out in original(request):
                out.finish_reason = None
                yield out
            while True:
                await asyncio.sleep(0.01)
                yield type(out)(" more", 7, out.prompt_tokens, None)
        finally:
            aborted.set()

    engine.stream = endless
    app = create_app(settings, engine=engine)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        body = {"model": "support", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json=body,
                headers={**auth("narrow"), "x-request-id": "bye"},
            ) as r,
        ):
            async for _ in r.aiter_bytes():
                break
        await asyncio.wait_for(aborted.wait(), 1.0)  # the engine request ends within a second
        await asyncio.sleep(0.1)
        assert await app.state.gateway.state.store.slots_in_use("narrow") == 0
    finally:
        server.should_exit = True
        await task
    recs = [
        orjson.loads(x)
        for f in audit_files(settings.audit_dir)
        for x in f.read_bytes().splitlines()
    ]
    assert [(r["request_id"], r["decision"], r["status"]) for r in recs] == [
        ("bye", "cut_off", 499)
    ]
