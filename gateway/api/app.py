"""The app factory: everything is built in `create_app` and its lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from gateway.api.admin_routes import router as admin_router
from gateway.api.drain import SigtermDrain
from gateway.api.errors import install_error_handlers
from gateway.api.fast_path import CompletionFastPath
from gateway.api.middleware import (
    BodyLimitMiddleware,
    HeadAsGet,
    InflightGate,
    RequestIdMiddleware,
)
from gateway.api.openai_routes import router as openai_router
from gateway.api.ops_routes import router as ops_router
from gateway.api.rollout_routes import router as rollout_router
from gateway.audit import AuditSink
from gateway.audit.file_sink import FileAuditSink
from gateway.catalogue import TuneCatalogue
from gateway.engine import Adapter, Engine
from gateway.errors import GatewayError
from gateway.heap import freeze_startup_heap, thaw_heap
from gateway.limits import Limiter
from gateway.observability import Metrics
from gateway.observability.metrics import multiprocess_dir
from gateway.observability.tracing import Tracing, TracingMiddleware
from gateway.policy import PolicySet, load_policy
from gateway.service import Gateway, adapter_of
from gateway.settings import Settings
from gateway.shared_state import SharedState
from gateway.store import Store
from gateway.tune_validation import BaseModelInfo

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _default_engine(settings: Settings) -> Engine:
    if settings.engine.kind == "pool":
        from gateway.engine.pool import RemoteVLLMPool

        return RemoteVLLMPool(settings.engine)
    from gateway.engine.vllm_engine import VLLMEngine

    return VLLMEngine(settings.engine)


def _default_store(settings: Settings) -> Store:
    if settings.redis_url is None:
        from gateway.store.memory import MemoryStore

        return MemoryStore()
    from gateway.store.redis_store import RedisStore

    return RedisStore(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_prefix,
        op_timeout_s=settings.store_timeout_s,
    )


def _audit_sink(settings: Settings, metrics: Metrics) -> AuditSink:
    def on_event(event: str) -> None:
        metrics.child(metrics.audit_events, event).inc()

    def on_commit(seconds: float) -> None:
        metrics.audit_write_duration.observe(seconds)

    common = {
        "mode": settings.audit_mode,
        "timeout_s": settings.audit_timeout_s,
        "commit_interval_s": settings.audit_commit_interval_s,
        "on_event": on_event,
        "on_commit": on_commit,
    }
    if settings.audit_sink == "redis":
        if settings.redis_url is None:
            raise ValueError("TUNEGATE_AUDIT_SINK=redis needs TUNEGATE_REDIS_URL")
        from gateway.audit.redis_sink import RedisStreamAuditSink

        stream = settings.audit_stream or f"{settings.redis_prefix}audit:{socket.gethostname()}"
        return RedisStreamAuditSink(settings.redis_url.get_secret_value(), stream, **common)
    return FileAuditSink(settings.audit_dir, max_bytes=settings.audit_max_bytes, **common)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    store: Store | None = None,
    tracing: Tracing | None = None,
    on_stop: Callable[[], None] | None = None,
    drain_on_sigterm: bool = False,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the gateway app. Config files are validated here, so a bad file fails fast.
    Set by `tunegate serve`: `drain_on_sigterm`, SIGTERM drains before uvicorn stops;
    `freeze_heap`, once the engine has started, what start-up left is frozen out of the garbage
    collector's full collections (`gateway.heap`)."""
    catalogue = TuneCatalogue.load(settings.tunes_dir, settings.engine.served_model_name)

    def reload_policy() -> PolicySet:
        return load_policy(settings.policies_dir, set(catalogue.names()))

    metrics = Metrics()

    def fallback(op: str, decision: str) -> None:
        metrics.store_fallbacks.labels(op, decision).inc()

    store = store or _default_store(settings)
    state = SharedState(
        reload_policy(),
        store,
        version_check_s=settings.version_check_s,
        on_fallback=fallback,
        reload_policy=reload_policy,
    )
    limiter = Limiter(
        store,
        mode=settings.rate_limit_fallback,
        replicas=settings.replicas,
        lease_s=settings.slot_lease_s,
        on_fallback=fallback,
        on_reject=lambda t, r: metrics.child(metrics.rate_limited, t, r).inc(),
        early_start=settings.early_start,
    )
    audit = _audit_sink(settings, metrics)
    base_info = (
        BaseModelInfo(
            settings.engine.model_path,
            settings.engine.served_model_name,
            settings.engine.max_lora_rank,
        )
        if engine is None
        else None
    )
    tracing = tracing or Tracing.from_env()
    gateway = Gateway(
        catalogue,
        state,
        limiter,
        engine or _default_engine(settings),
        metrics,
        audit,
        base_info,
        tracing,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm: list[Adapter] = []

        async def start_and_freeze() -> None:
            await gateway.engine.start(warm)
            if freeze_heap:  # what start-up left (the engine's client too), out of full GCs
                freeze_startup_heap()

        async def first_start() -> bool:
            for tune in catalogue:
                try:
                    await gateway.validate(tune)
                except GatewayError as exc:
                    log.warning("not loading a tune at start: %s", exc.message)
                    continue
                warm.append(adapter_of(tune))
            try:
                await start_and_freeze()
            except Exception as exc:
                gateway.engine_failure = type(exc).__name__
                log.exception("engine failed to start")
                return False
            return True

        # A remote pool starts in a second or two: this process takes no connection before it
        # is ready (with several workers, none answers 503 while another says ready). The
        # in-process engine takes half a minute: the gateway serves /healthz meanwhile.
        started_inline = getattr(gateway.engine, "starts_fast", False)
        ok_inline = await first_start() if started_inline else False

        async def start_engine() -> None:
            if not started_inline and not await first_start():
                return
            if started_inline and not ok_inline:
                return
            # Watch the engine: when it dies (its process killed, a fatal error), start it
            # again; meanwhile /readyz is false and requests get 503 with Retry-After.
            while True:
                await asyncio.sleep(1.0)
                if not getattr(gateway.engine, "dead", False):
                    continue
                log.error("the engine died; restarting it")
                with contextlib.suppress(Exception):
                    await gateway.engine.stop()
                try:
                    await start_and_freeze()
                    log.warning("the engine is serving again")
                except Exception as exc:
                    gateway.engine_failure = type(exc).__name__
                    log.exception("engine failed to restart")
                    return

        drain = SigtermDrain(gateway, settings.drain_timeout_s) if drain_on_sigterm else None
        await audit.start()
        await state.start()
        task = asyncio.create_task(start_engine())
        try:
            if drain is not None:
                drain.install()
            yield
        finally:
            if drain is not None:
                drain.uninstall()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await state.stop()
            await gateway.engine.stop()
            await audit.close()
            await limiter.close()
            await store.close()
            # Spans still queued are flushed, but an unreachable collector does not hold the
            # shutdown up: the exporter's retries are cut off after a few seconds.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(tracing.shutdown), 5)
            if on_stop is not None:  # what the caller started beside the gateway
                await asyncio.to_thread(on_stop)
            if freeze_heap:
                thaw_heap()
            if multiprocess_dir():  # this worker's live gauges stop counting
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(
        title="Tunegate", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    gateway.max_inflight = settings.max_inflight
    gateway.first_token_timeout_s = settings.first_token_timeout_s
    gateway.request_timeout_s = settings.request_timeout_s
    app.state.gateway = gateway
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(ops_router)
    app.include_router(rollout_router)
    app.include_router(admin_router)
    app.add_middleware(HeadAsGet)  # innermost: HEAD reaches the routes as GET
    app.add_middleware(CompletionFastPath)  # the two completion routes, directly
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(TracingMiddleware, tracing=tracing)  # inside: the request id is set
    app.add_middleware(InflightGate, gateway=gateway)  # refusals at the door: no span, no body
    app.add_middleware(RequestIdMiddleware)
    return app
