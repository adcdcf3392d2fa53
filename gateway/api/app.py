"""The app factory: everything is built in `create_app` and its lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from gateway.api.errors import install_error_handlers
from gateway.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from gateway.api.openai_routes import router as openai_router
from gateway.api.ops_routes import router as ops_router
from gateway.catalogue import TuneCatalogue
from gateway.engine import Engine
from gateway.observability import Metrics
from gateway.service import Gateway, adapter_of
from gateway.settings import Settings
from gateway.tenants import TenantDirectory

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _default_engine(settings: Settings) -> Engine:
    from gateway.engine.vllm_engine import VLLMEngine

    return VLLMEngine(settings.engine)


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the gateway app. Config files are validated here, so a bad file fails fast."""
    catalogue = TuneCatalogue.load(settings.tunes_dir, settings.engine.served_model_name)
    tenants = TenantDirectory.load(settings.policies_dir, set(catalogue.names()))
    gateway = Gateway(catalogue, tenants, engine or _default_engine(settings), Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm = [
            adapter_of(t) for t in catalogue if (t.adapter_path / "adapter_config.json").is_file()
        ]

        async def start() -> None:
            try:
                await gateway.engine.start(warm)
            except Exception as exc:
                gateway.engine_failure = type(exc).__name__
                log.exception("engine failed to start")

        task = asyncio.create_task(start())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await gateway.engine.stop()

    app = FastAPI(
        title="Tunegate", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.gateway = gateway
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(ops_router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
