"""The Redis Streams audit sink against a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from gateway.api import create_app
from gateway.audit.redis_sink import RedisStreamAuditSink, read_stream
from gateway.audit.verify import verify_lines
from tests.api.conftest import EchoEngine, auth, write_config

ROOT = Path(__file__).resolve().parents[2]


async def test_stream_chain_continues_and_verifies(redis_server):
    stream = f"audit-{uuid.uuid4().hex[:8]}"
    for _ in range(2):  # a restart continues the same chain
        sink = RedisStreamAuditSink(redis_server.url, stream)
        await sink.start()
        await asyncio.gather(*(sink.write({"request_id": f"r{i}"}) for i in range(5)))
        await sink.close()
    lines = await read_stream(redis_server.url, stream)
    result = verify_lines(stream, lines)
    assert result.ok and result.records == 10, result.message
    cli = [sys.executable, "-m", "gateway", "audit", "verify", redis_server.url, "--stream", stream]
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    r = aioredis.Redis.from_url(redis_server.url)
    entries = await r.xrange(stream)
    await r.xdel(stream, entries[3][0])  # delete one record
    await r.aclose()
    result = verify_lines(stream, await read_stream(redis_server.url, stream))
    assert not result.ok and f"{stream}#4" in result.message
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1


async def test_gateway_writes_its_audit_to_redis(tmp_path, redis_server):
    stream = f"gw-audit-{uuid.uuid4().hex[:8]}"
    settings = write_config(tmp_path).model_copy(
        update={"audit_sink": "redis", "audit_stream": stream, "redis_prefix": f"{stream}:"}
    )
    settings = settings.model_copy(update={"redis_url": SecretStr(redis_server.url)})
    app = create_app(settings, engine=EchoEngine())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        body = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}
        assert (await c.post("/v1/chat/completions", json=body, headers=auth())).status_code == 200
        assert (await c.get("/v1/models")).status_code == 401
    lines = await read_stream(redis_server.url, stream)
    assert len(lines) == 2 and verify_lines(stream, lines).ok
