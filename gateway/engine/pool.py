"""`RemoteVLLMPool`: the engine as N vLLM OpenAI servers, with tune-affinity routing.

Servers come from a list of URLs or from a headless Service's DNS name (its A records are the
pods). A health loop checks each server's `/health`, ejects failing ones and brings them back,
and reconciles what each holds from `/v1/models` (the LoRA modules it lists) and its load from
its `/metrics`. Tunes are loaded onto servers through `/v1/load_lora_adapter` (the servers run
with runtime LoRA updating) and unloaded least-recently-used first to keep each server within
its adapter budget. Those control endpoints are only ever called by the gateway.

Routing: a healthy server that already holds the tune and is under the saturation bound, the
least busy first; otherwise the tune is loaded on the least busy healthy server. A request that
has not received its first byte is retried once on another server after a connect error or a
502/503 — never after a 4xx, never once the server has begun answering. A request the client
wants whole is asked of the server whole (one body to parse instead of one event per token;
`pool_whole_answers`); the rest stream, over pooled keep-alive connections (`upstream_http.py`,
a lean HTTP/1.1 client for these requests), each chunk parsed once with orjson (`pool_wire.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.engine.pool_wire import (
    UpstreamError,
    message,
    read_stream,
    read_whole,
    request_body,
    vllm_load,
)
from gateway.engine.prompts import PromptRenderer, RendersPrompts
from gateway.engine.types import Adapter, EngineRequest, EngineStats, Output
from gateway.engine.upstream_http import UpstreamClient
from gateway.errors import (
    DeadlineError,
    EngineUnavailableError,
    GatewayError,
    InvalidRequestError,
)
from gateway.settings import EngineSettings

__all__ = ["RemoteVLLMPool", "UpstreamError"]

log = logging.getLogger(__name__)


class _Retry(Exception):
    """Failed before the first byte, in a way another server may not (connect, 502, 503)."""

    def __init__(self, reason: str, *, unhealthy: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unhealthy = unhealthy


@dataclass(eq=False)
class Server:
    url: str
    healthy: bool = False
    inflight: int = 0
    adapters: OrderedDict[str, None] = field(default_factory=OrderedDict)  # LRU first
    busy: dict[str, int] = field(default_factory=dict)  # in-flight requests per adapter
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    loads: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return urlsplit(self.url).netloc


class RemoteVLLMPool(RendersPrompts):
    """The `Engine` over a pool of vLLM OpenAI servers."""

    def __init__(self, settings: EngineSettings) -> None:
        if not settings.pool_urls and not settings.pool_dns:
            raise ValueError("the pool engine needs TUNEGATE_ENGINE__POOL_URLS or __POOL_DNS")
        self.settings = settings
        self.answers_whole = settings.pool_whole_answers
        self.servers: dict[str, Server] = {
            u.rstrip("/"): Server(u.rstrip("/")) for u in settings.pool_urls
        }
        self._known: dict[str, Adapter] = {}  # adapters the gateway asked for, by name
        self._prompts: PromptRenderer | None = None
        self._session: Any = None  # health, models, metrics and adapter calls
        self._upstream = UpstreamClient(settings.pool_connections)  # generation requests
        self._health_task: asyncio.Task[None] | None = None
        self._max_model_len = settings.max_model_len
        key = settings.upstream_api_key
        self._auth = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        self.on_evict: Callable[[Adapter], None] = lambda adapter: None
        self.on_load: Callable[[Adapter, float], None] = lambda adapter, seconds: None
        self.on_route: Callable[[str, str], None] = lambda server, affinity: None
        self.on_retry: Callable[[str], None] = lambda reason: None

    # -- lifecycle ---------------------------------------------------------------------------

    starts_fast = True  # the app waits for `start()` before it takes connections

    @property
    def ready(self) -> bool:
        return self._prompts is not None and any(s.healthy for s in self.servers.values())

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def start(self, warm_adapters: Sequence[Adapter] = ()) -> None:
        import aiohttp

        s = self.settings
        self._prompts = await asyncio.to_thread(PromptRenderer.from_pretrained, s.model_path)
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=s.pool_connections, keepalive_timeout=75, ttl_dns_cache=None
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        await self.refresh()
        for adapter in warm_adapters:
            self._known[adapter.name] = adapter
        healthy = [srv for srv in self.servers.values() if srv.healthy]
        for i, adapter in enumerate(warm_adapters):  # spread the catalogue over the pool
            if healthy:
                with contextlib.suppress(GatewayError, _Retry):
                    await self._load_on(healthy[i % len(healthy)], adapter)
        self._health_task = asyncio.create_task(self._health_loop())

    async def stop(self) -> None:
        self._close_prompts()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(BaseException):
                await self._health_task
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._upstream.close()

    # -- health, discovery, reconciliation ------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.pool_health_interval_s)
            try:
                await self.refresh()
            except Exception:  # the loop must outlive any one bad round
                log.exception("engine pool health check failed")

    async def refresh(self) -> None:
        """Discover servers, check each one's health, and reconcile what each holds."""
        await self._discover()
        await asyncio.gather(*(self._check(s) for s in list(self.servers.values())))

    async def _discover(self) -> None:
        if not self.settings.pool_dns:
            return
        host, _, port = self.settings.pool_dns.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, int(port), type=socket.SOCK_STREAM
            )
        except (OSError, ValueError):
            log.warning("engine pool: cannot resolve %s", self.settings.pool_dns)
            return
        found = {}
        for _, _, _, _, addr in infos:
            ip = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
            url = f"http://{ip}:{addr[1]}"
            found[url] = self.servers.get(url) or Server(url)
        for url, server in self.servers.items():
            if url not in found and server.inflight:  # leaving: keep until its requests end
                server.healthy = False
                found[url] = server
        self.servers = found

    async def _check(self, server: Server) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=max(1.0, self.settings.pool_connect_timeout_s))
        try:
            async with self._session.get(
                f"{server.url}/health", headers=self._auth, timeout=timeout
            ) as r:
                ok = r.status == 200
            if ok:
                await self._reconcile(server, timeout)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            ok = False
        if ok != server.healthy:
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "engine server %s is %s", server.label, "healthy" if ok else "failing")
        server.healthy = ok

    async def _reconcile(self, server: Server, timeout: Any) -> None:
        async with self._session.get(
            f"{server.url}/v1/models", headers=self._auth, timeout=timeout
        ) as r:
            models = orjson.loads(await r.read())["data"]
        held = [m["id"] for m in models if m.get("parent")]
        base = next((m for m in models if not m.get("parent")), None)
        if base and base.get("max_model_len"):
            self._max_model_len = int(base["max_model_len"])
        ordered = OrderedDict((n, None) for n in server.adapters if n in held)
        ordered.update((n, None) for n in held if n not in ordered)
        server.adapters = ordered
        with contextlib.suppress(Exception):  # load figures are a nicety, not a health signal
            async with self._session.get(f"{server.url}/metrics", timeout=timeout) as r:
                text = (await r.read()).decode()
            server.running, server.waiting, server.kv_cache_usage = vllm_load(text)

    # -- adapters ------------------------------------------------------------------------------

    async def load_adapter(self, adapter: Adapter) -> bool:
        """Known to the pool and held by at least one healthy server."""
        self._known[adapter.name] = adapter
        for _ in range(2):  # a server that fails to answer is marked down; try another
            healthy = [s for s in self.servers.values() if s.healthy]
            if not healthy or any(adapter.name in s.adapters for s in healthy):
                return False
            target = min(healthy, key=lambda s: (s.inflight, len(s.adapters)))
            try:
                return await self._load_on(target, adapter)
            except _Retry:
                continue
        return False

    async def _load_on(self, server: Server, adapter: Adapter) -> bool:
        import aiohttp

        lock = server.loads.setdefault(adapter.name, asyncio.Lock())
        async with lock:
            if adapter.name in server.adapters:
                return False
            await self._make_room(server)
            started = time.perf_counter()
            body = {"lora_name": adapter.name, "lora_path": str(adapter.path)}
            try:
                async with self._session.post(
                    f"{server.url}/v1/load_lora_adapter",
                    data=orjson.dumps(body),
                    headers={**self._auth, "Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=120),
                ) as r:
                    text = (await r.read()).decode(errors="replace")
                    status = r.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                server.healthy = False
                raise _Retry(f"load failed: {type(exc).__name__}", unhealthy=True) from None
            if status != 200 and "already been loaded" not in text:
                raise EngineUnavailableError(
                    f"Tune `{adapter.name}` could not be loaded on an engine server "
                    f"(status {status}).",
                    param="model",
                    headers={"Retry-After": "5"},
                )
            server.adapters[adapter.name] = None
            if status == 200:
                self.on_load(adapter, time.perf_counter() - started)
            return status == 200

    async def _make_room(self, server: Server) -> None:
        """Evict least-recently-used adapters with nothing in flight, down to the budget.
        Only adapters this gateway loaded: what an operator loaded on a server stays."""
        budget = self.settings.pool_adapters_per_server
        for name in list(server.adapters):
            if len(server.adapters) < budget:
                return
            if server.busy.get(name) or name not in self._known:
                continue
            await self._unload_from(server, name)
            adapter = self._known.get(name)
            if adapter is not None:
                self.on_evict(adapter)

    async def _unload_from(self, server: Server, name: str) -> None:
        import aiohttp

        server.adapters.pop(name, None)
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self._session.post(
                f"{server.url}/v1/unload_lora_adapter",
                data=orjson.dumps({"lora_name": name}),
                headers={**self._auth, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as r:
                await r.read()

    async def unload_adapter(self, adapter: Adapter) -> None:
        self._known.pop(adapter.name, None)
        for server in self.servers.values():
            if adapter.name in server.adapters:
                await self._unload_from(server, adapter.name)

    async def loaded_adapters(self) -> set[int]:
        held = {n for s in self.servers.values() if s.healthy for n in s.adapters}
        return {a.adapter_id for n, a in self._known.items() if n in held}

    async def health(self) -> bool:
        return self.ready

    def stats(self) -> EngineStats:
        servers = [s for s in self.servers.values() if s.healthy]
        return EngineStats(
            running=sum(s.running for s in servers),
            waiting=sum(s.waiting for s in servers),
            kv_cache_usage=max((s.kv_cache_usage for s in servers), default=0.0),
            adapters_resident=sum(len(s.adapters) for s in servers),
        )

    def describe(self) -> list[dict[str, Any]]:
        """Each server as the gateway sees it (for the admin API)."""
        return [
            {
                "server": s.label,
                "healthy": s.healthy,
                "inflight": s.inflight,
                "adapters": list(s.adapters),
                "running": s.running,
                "waiting": s.waiting,
            }
            for s in self.servers.values()
        ]

    # -- routing and generation -----------------------------------------------------------------

    async def _pick(self, adapter: Adapter | None, exclude: set[str]) -> Server | None:
        healthy = [s for s in self.servers.values() if s.healthy and s.url not in exclude]
        if not healthy:
            return None
        least = min(healthy, key=lambda s: s.inflight)
        if adapter is None:
            self.on_route(least.label, "base")
            return least
        holders = [s for s in healthy if adapter.name in s.adapters]
        free = [s for s in holders if s.inflight < self.settings.pool_saturation]
        if free:
            best = min(free, key=lambda s: s.inflight)
            best.adapters.move_to_end(adapter.name)
            self.on_route(best.label, "hit")
            return best
        others = [s for s in healthy if s not in holders]
        if not others:  # every healthy server holds it and all are saturated
            best = min(holders, key=lambda s: s.inflight)
            self.on_route(best.label, "hit")
            return best
        target = min(others, key=lambda s: (s.inflight, len(s.adapters)))
        await self._load_on(target, adapter)
        self.on_route(target.label, "load")
        return target

    def stream(self, request: EngineRequest) -> AsyncIterator[Output]:
        if not self.ready:
            raise EngineUnavailableError(
                "No engine server is available; try again shortly.", headers={"Retry-After": "2"}
            )
        return self._generate(request)

    async def _generate(self, request: EngineRequest) -> AsyncIterator[Output]:
        tried: set[str] = set()
        failures: list[str] = []
        for attempt in range(2):
            try:
                server = await self._pick(request.adapter, tried)
            except _Retry as exc:
                self.on_retry(exc.reason)
                continue
            if server is None:
                break
            tried.add(server.url)
            started = False
            try:
                outputs = self._from_server(server, request)
                try:
                    async for out in outputs:
                        started = True
                        yield out
                finally:
                    await outputs.aclose()  # now, not by the garbage collector: see Gateway.stream
                return
            except _Retry as exc:
                failures.append(exc.reason)
                if exc.unhealthy:
                    server.healthy = False
                if exc.reason == "adapter missing":
                    tried.discard(server.url)  # the same server may load it again
                if started or attempt == 1:
                    break
                self.on_retry(exc.reason)
        if failures and all(f == "connect: timeout" for f in failures):
            raise DeadlineError(
                "No engine server accepted the connection within "
                f"{self.settings.pool_connect_timeout_s:g} s; the request was not started."
            )
        raise EngineUnavailableError(
            "No engine server could take the request; try again shortly.",
            headers={"Retry-After": "2"},
        )

    async def _from_server(self, server: Server, request: EngineRequest) -> AsyncIterator[Output]:
        s = self.settings
        headers = {**self._auth, "Content-Type": "application/json"}
        if request.trace_headers:
            headers.update(request.trace_headers)
        name = request.adapter.name if request.adapter else ""
        server.inflight += 1
        server.busy[name] = server.busy.get(name, 0) + 1
        # A whole answer's first byte comes when it is finished: the caller's deadline bounds it.
        whole = request.whole and self.answers_whole
        response = None
        streaming = drained = False
        try:
            try:
                response = await self._upstream.post(
                    server.url,
                    "/v1/completions",
                    request_body(request, s.served_model_name, whole=whole),
                    headers,
                    connect_timeout=s.pool_connect_timeout_s,
                    read_timeout=None if whole else s.pool_read_timeout_s,
                )
            except TimeoutError:
                raise _Retry("connect: timeout", unhealthy=True) from None
            except OSError as exc:  # could not connect, or closed before answering
                raise _Retry(f"connect: {type(exc).__name__}", unhealthy=True) from None
            if response.status != 200:
                await self._refuse(server, request, response)
            streaming = True
            prompt_tokens = len(request.prompt_token_ids)
            if whole:
                out = read_whole(await response.read(), prompt_tokens)
                drained = True  # read to the end: the connection goes back to the pool
                yield out
            else:
                async with (
                    contextlib.aclosing(response.iter_chunks()) as chunks,
                    contextlib.aclosing(read_stream(chunks, prompt_tokens)) as outputs,
                ):
                    async for out in outputs:
                        yield out
                drained = True
        except OSError as exc:  # TimeoutError is one too
            if not streaming:
                raise _Retry(f"connect: {type(exc).__name__}", unhealthy=True) from None
            raise UpstreamError(
                f"The engine server dropped the stream ({type(exc).__name__})."
            ) from None
        finally:
            server.inflight -= 1
            server.busy[name] -= 1
            if response is not None:
                if drained:
                    response.release()  # kept alive for the next request
                else:
                    response.close()  # an unfinished answer: closing aborts it on the server

    async def _refuse(self, server: Server, request: EngineRequest, response: Any) -> None:
        """A non-200 answer before any output: retry, or the client's error in our envelope."""
        status = response.status
        try:
            detail = orjson.loads(await response.read())
        except (orjson.JSONDecodeError, ValueError, OSError):
            detail = {}
        if status in (502, 503):
            raise _Retry(f"status {status}")
        if status == 404 and request.adapter is not None:
            # The server lost the tune (a restart): forget it there, load it again, retry.
            server.adapters.pop(request.adapter.name, None)
            raise _Retry("adapter missing")
        text = message(detail, f"The engine server answered {status}.")
        if 400 <= status < 500:
            raise InvalidRequestError(text, code="upstream_rejected")
        raise UpstreamError(text)
