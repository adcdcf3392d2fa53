"""`RemoteVLLMPool` against servers that speak the vLLM OpenAI API (the mock in `loadtests/`,
served by uvicorn on loopback ports): affinity, saturation, the adapter budget, health checks,
retries before the first byte and never after it, DNS discovery."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.engine import Adapter, EngineRequest
from gateway.engine.pool import RemoteVLLMPool, UpstreamError
from gateway.errors import DeadlineError, EngineUnavailableError, InvalidRequestError
from gateway.settings import EngineSettings
from loadtests.mock_vllm import MockVLLM

ADAPTERS = {n: Adapter(f"{n}@1", i + 1, Path(f"/adapters/{n}")) for i, n in enumerate("abc")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A mock vLLM server on a loopback port, which a test can stop and start again."""

    def __init__(self, mock: MockVLLM) -> None:
        self.mock = mock
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self.mock, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None
        self.server.should_exit = True
        self.server.force_exit = True
        await self.task


@pytest.fixture
async def servers() -> AsyncIterator[list[Served]]:
    pair = [Served(MockVLLM(api_key="up-key", tokens=6, name=n)) for n in ("one", "two")]
    for s in pair:
        await s.start()
    yield pair
    for s in pair:
        if s.server is not None and not s.server.should_exit:
            await s.stop()


def settings(demo_build: Path, urls: list[str], **kw: object) -> EngineSettings:
    return EngineSettings(
        kind="pool",
        model_path=demo_build / "base",
        pool_urls=urls,
        upstream_api_key="up-key",
        pool_health_interval_s=0.2,
        **kw,
    )


@pytest.fixture
async def make_pool(demo_build):
    pools: list[RemoteVLLMPool] = []

    async def make(urls: list[str], **kw: object) -> RemoteVLLMPool:
        pool = RemoteVLLMPool(settings(demo_build, urls, **kw))
        await pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.stop()


def request(name: str | None, rid: str = "r", **kw: object) -> EngineRequest:
    adapter = ADAPTERS[name] if name else None
    return EngineRequest(rid, [1, 2, 3], kw.pop("max_tokens", 6), adapter=adapter, **kw)


async def run(pool: RemoteVLLMPool, req: EngineRequest) -> str:
    await pool.load_adapter(req.adapter) if req.adapter else None
    text = ""
    async for out in pool.stream(req):
        text += out.text
        last = out
    assert last.finish_reason == "length" and last.completion_tokens == req.max_tokens
    return text


async def test_requests_settle_on_servers_that_hold_their_tune(servers, make_pool):
    pool = await make_pool([s.url for s in servers])
    routes: Counter[str] = Counter()
    pool.on_route = lambda server, affinity: routes.update([affinity])
    assert pool.ready
    reqs = [request("a" if i % 2 else "b", f"r{i}") for i in range(40)]
    gate = asyncio.Semaphore(6)  # below the saturation bound: affinity decides

    async def limited(r: EngineRequest) -> str:
        async with gate:
            return await run(pool, r)

    texts = await asyncio.gather(*(limited(r) for r in reqs))
    assert all(t == " w0 w1 w2 w3 w4 w5" for t in texts)
    assert routes["hit"] / sum(routes.values()) >= 0.9, routes
    served = [Counter(s.mock.served) for s in servers]
    for name in ("a@1", "b@1"):  # each tune mostly on one server
        counts = sorted(c[name] for c in served)
        assert counts[-1] / sum(counts) >= 0.9, served
    assert servers[0].mock.last_headers["authorization"] == "Bearer up-key"


async def test_a_saturated_holder_makes_the_tune_load_elsewhere(servers, make_pool):
    for s in servers:
        s.mock.delay_s = 0.2
    pool = await make_pool([s.url for s in servers], pool_saturation=2)
    loads: list[str] = []
    pool.on_load = lambda adapter, seconds: loads.append(adapter.name)
    await asyncio.gather(*(run(pool, request("a", f"r{i}")) for i in range(6)))
    assert all("a@1" in s.mock.adapters for s in servers)
    assert all(s.mock.served.count("a@1") >= 2 for s in servers)
    assert loads.count("a@1") == 2


async def test_each_server_keeps_within_its_adapter_budget(servers, make_pool):
    pool = await make_pool([servers[0].url], pool_adapters_per_server=2)
    evicted: list[str] = []
    pool.on_evict = lambda adapter: evicted.append(adapter.name)
    for name in ("a", "b", "a", "c"):
        await run(pool, request(name))
    assert set(servers[0].mock.adapters) == {"a@1", "c@1"}  # b was the least recently used
    assert evicted == ["b@1"]
    assert await pool.loaded_adapters() == {ADAPTERS["a"].adapter_id, ADAPTERS["c"].adapter_id}


async def test_retried_once_on_another_server_before_the_first_byte(servers, make_pool):
    pool = await make_pool([s.url for s in servers])
    retries: list[str] = []
    pool.on_retry = retries.append
    await run(pool, request(None))
    busy = next(s for s in servers if s.mock.served)
    busy.mock.fail_status = 503
    for i in range(4):
        await run(pool, request(None, f"x{i}"))
    other = next(s for s in servers if s is not busy)
    assert len(other.mock.served) >= 4 and retries and retries[0].startswith("status 503")
    busy.mock.fail_status = 400  # a client error is never retried
    other.mock.fail_status = 400
    with pytest.raises(InvalidRequestError):
        await run(pool, request(None, "bad"))
    other.mock.fail_status = busy.mock.fail_status = 503
    with pytest.raises(EngineUnavailableError):  # one retry only, then a clean 503
        await run(pool, request(None, "both"))


async def test_a_dead_server_is_ejected_and_rejoins(servers, make_pool):
    pool = await make_pool([s.url for s in servers])
    await servers[0].stop()
    for i in range(6):  # none of these fails: a connect error is retried on the other server
        await run(pool, request("a", f"r{i}"))
    assert not pool.servers[servers[0].url].healthy
    await servers[0].start()
    for _ in range(50):
        await asyncio.sleep(0.1)
        if pool.servers[servers[0].url].healthy:
            break
    assert pool.servers[servers[0].url].healthy
    servers[0].mock.adapters.clear()  # it came back empty: the pool learns that from /v1/models
    await asyncio.sleep(0.5)
    assert not pool.servers[servers[0].url].adapters


async def test_never_retried_once_streaming_has_begun(servers, make_pool):
    pool = await make_pool([servers[0].url, servers[1].url])
    for s in servers:
        s.mock.drop_after = 2
    before = sum(len(s.mock.served) for s in servers)
    got = []
    with pytest.raises(UpstreamError):
        async for out in pool.stream(request(None)):
            got.append(out.text)
    assert "".join(got) == " w0 w1"  # events that arrive together may come as one output
    assert sum(len(s.mock.served) for s in servers) == before + 1


async def test_a_server_that_lost_the_tune_gets_it_again(servers, make_pool):
    pool = await make_pool([servers[0].url])
    await run(pool, request("a"))
    servers[0].mock.adapters.clear()  # a restart the health check has not seen yet
    assert await run(pool, request("a", "again"))
    assert "a@1" in servers[0].mock.adapters


async def test_servers_discovered_from_dns(servers, make_pool):
    pool = await make_pool([], pool_dns=f"localhost:{servers[0].port}")
    assert any(s.healthy and s.url.endswith(f":{servers[0].port}") for s in pool.servers.values())
    assert await run(pool, request("b"))


async def test_trace_context_is_passed_on(servers, make_pool):
    pool = await make_pool([servers[0].url])
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await run(pool, request(None, trace_headers={"traceparent": tp}))
    assert servers[0].mock.last_headers["traceparent"] == tp


@contextlib.asynccontextmanager
async def gateway_over(
    server: Served, demo_build: Path, tmp_path: Path, **update: object
) -> AsyncIterator[Any]:
    """A whole gateway (test config, these settings) in front of one server, once ready."""
    import httpx

    from gateway.api import create_app
    from tests.api.conftest import write_config

    base = write_config(tmp_path)
    engine = RemoteVLLMPool(settings(demo_build, [server.url], served_model_name="test-base"))
    app = create_app(base.model_copy(update={"engine": engine.settings, **update}), engine=engine)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        for _ in range(100):  # the engine starts in the background
            if (await c.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        yield c


async def test_gateway_over_the_pool_ends_a_dropped_stream_with_an_error(
    servers, demo_build, tmp_path
):
    """Through the whole gateway: upstream errors become the OpenAI envelope, and a stream the
    server drops ends with an error event, never a false `[DONE]`."""
    from tests.api.conftest import auth

    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    async with gateway_over(servers[0], demo_build, tmp_path) as c:
        r = await c.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip()
        servers[0].mock.drop_after = 2
        async with c.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=auth()
        ) as r:
            text = (await r.aread()).decode()
        assert r.status_code == 200
        assert '"error"' in text and "[DONE]" not in text
        servers[0].mock.drop_after = None
        servers[0].mock.fail_status = 400
        r = await c.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 400 and set(r.json()["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }
        servers[0].mock.fail_status = 503
        r = await c.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 503 and r.headers["retry-after"]
        servers[0].mock.fail_status = None
        state = await c.get("/admin/engine", headers={"Authorization": "Bearer admin-test-token"})
        assert state.json()["servers"][0]["healthy"] is True
        metrics = (await c.get("/metrics")).text
        assert 'tunegate_pool_routes_total{affinity="hit"' in metrics
        assert "up-key" not in metrics


async def test_adapters_the_gateway_did_not_load_are_never_evicted(servers, make_pool):
    servers[0].mock.adapters.update({"ops-a": "/x", "ops-b": "/y"})  # loaded by an operator
    pool = await make_pool([servers[0].url], pool_adapters_per_server=2)
    for name in ("a", "b", "c"):
        await run(pool, request(name))
    assert {"ops-a", "ops-b"} <= set(servers[0].mock.adapters)


async def test_a_server_that_stops_accepting_connections_is_a_504(servers, make_pool):
    """Past the connect deadline (and its one retry) the answer is 504 deadline_exceeded."""
    pool = await make_pool([servers[0].url], pool_connect_timeout_s=0.3)
    await run(pool, request(None))
    await servers[0].stop()  # its keep-alive connections close with it
    # The same port now takes no connections: a listener whose queue is full drops new ones.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", servers[0].port))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", servers[0].port))
        fillers.append(c)
    try:
        for server in pool.servers.values():
            server.healthy = True  # as the last health round saw it
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineError) as caught:
            async for _ in pool.stream(request(None, "late")):
                pass
        assert caught.value.status == 504 and caught.value.code == "deadline_exceeded"
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        for c in fillers:
            c.close()
        listener.close()


async def test_a_whole_request_is_asked_whole_and_comes_as_one_output(servers, make_pool):
    """Whole (`pool_whole_answers`, the default): one body to parse, usage from it. Off: the
    same request streams."""
    pool = await make_pool([servers[0].url])
    outs = [o async for o in pool.stream(request(None, whole=True))]
    assert servers[0].mock.last_request["stream"] is False
    assert [(o.text, o.finish_reason, o.completion_tokens, o.prompt_tokens) for o in outs] == [
        (" w0 w1 w2 w3 w4 w5", "length", 6, 3)
    ]
    off = await make_pool([servers[0].url], pool_whole_answers=False)
    outs = [o async for o in off.stream(request(None, whole=True))]
    assert servers[0].mock.last_request["stream"] is True
    assert "".join(o.text for o in outs) == " w0 w1 w2 w3 w4 w5"


async def test_a_whole_answer_the_server_cuts_is_a_502_never_retried(servers, make_pool):
    pool = await make_pool([servers[0].url, servers[1].url])
    for s in servers:
        s.mock.drop_after = 0
    before = sum(len(s.mock.served) for s in servers)
    with pytest.raises(UpstreamError):
        async for _ in pool.stream(request(None, whole=True)):
            pass
    assert sum(len(s.mock.served) for s in servers) == before + 1


async def test_whole_answers_through_the_gateway(servers, demo_build, tmp_path):
    """A non-streamed client request is asked of the server whole; a streamed one streams. A
    whole answer has only the whole-answer deadline: a slow answer inside it is served even past
    the first-token deadline, and one past it is a 504."""
    from tests.api.conftest import auth

    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    mock = servers[0].mock
    deadlines = {"first_token_timeout_s": 0.2, "request_timeout_s": 1.0}
    async with gateway_over(servers[0], demo_build, tmp_path, **deadlines) as c:
        r = await c.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 200 and mock.last_request["stream"] is False
        assert r.json()["choices"][0]["message"]["content"] == " w0 w1 w2 w3 w4 w5"
        assert r.json()["usage"]["completion_tokens"] == 6
        r = await c.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth())
        assert r.status_code == 200 and mock.last_request["stream"] is True
        assert r.text.count("data: ") > 3 and r.text.endswith("data: [DONE]\n\n")
        mock.delay_s = 0.4  # past the first-token deadline, inside the whole-answer one
        r = await c.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 200
        mock.delay_s = 1.5  # past the whole-answer deadline
        r = await c.post("/v1/chat/completions", json=body, headers=auth())
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
        assert "1 s" in r.json()["error"]["message"]
        mock.delay_s = 0.0


@pytest.mark.parametrize("whole", [True, False])
async def test_an_answer_left_early_gives_its_server_back_at_once(servers, make_pool, whole):
    """The consumer stops after the first output and closes the stream: the server's count and
    the connection come back before the loop runs anything else (not in a task the garbage
    collector's finalizer starts later)."""
    pool = await make_pool([servers[0].url])
    server = pool.servers[servers[0].url]
    outputs = pool.stream(request(None, whole=whole))
    first = await anext(outputs)
    assert first.text and server.inflight == 1
    await outputs.aclose()
    assert server.inflight == 0 and server.busy[""] == 0
    # a whole answer was read to the end, so its connection is kept; a cut stream's is closed
    assert pool._upstream.idle_count(servers[0].url) == (1 if whole else 0)


@contextlib.contextmanager
def generators_left_to_the_collector() -> Iterator[list[str]]:
    """The gateway's async generators that the event loop's finalizer hook had to close (each
    costs a task and a wake-up of the loop, and its clean-up runs late)."""
    hooks = sys.get_asyncgen_hooks()
    left: list[str] = []

    def finalizer(agen: Any) -> None:
        if f"{os.sep}gateway{os.sep}" in agen.ag_code.co_filename:
            left.append(agen.__qualname__)
        hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        yield left
    finally:
        sys.set_asyncgen_hooks(*hooks)


async def test_the_gateway_closes_every_engine_generator_it_opens(servers, demo_build, tmp_path):
    """Whole, streamed and shorter answers through the gateway: none of the gateway's or the
    engine's generators is left behind for the finalizer hook (a whole answer's caller leaves
    its stream after the one output, which before left the pool's two generators suspended)."""
    from tests.api.conftest import auth

    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    async with gateway_over(servers[0], demo_build, tmp_path) as c:
        with generators_left_to_the_collector() as left:
            for extra in ({}, {"stream": True}, {"max_tokens": 2}):
                r = await c.post("/v1/chat/completions", json={**body, **extra}, headers=auth())
                assert r.status_code == 200
            await asyncio.sleep(0.05)
            gc.collect()
    assert left == []
