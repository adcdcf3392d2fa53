"""Health, readiness and metrics: the routes that need no key."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from gateway.api.errors import error_responses
from gateway.errors import EngineUnavailableError, ShuttingDownError
from gateway.service import Gateway

__all__ = ["router"]

router = APIRouter()


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "engine_failed", "ready"]
    error: str | None = None


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get(
    "/healthz",
    responses={
        200: {"model": Health, "description": "The process is alive"},
        503: {"model": Health, "description": "The engine failed to start"},
        **error_responses(),
    },
)
async def healthz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    if gw.engine_failure is not None:
        return _json({"status": "engine_failed", "error": gw.engine_failure}, 503)
    return _json({"status": "ok"})


@router.get(
    "/readyz",
    responses={
        200: {"model": Health, "description": "The engine is warm"},
        **error_responses(503),
    },
)
async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    if gw.draining:
        raise ShuttingDownError("The gateway is shutting down.", headers={"Retry-After": "5"})
    if not gw.engine.ready:
        raise EngineUnavailableError("The engine is not ready.", headers={"Retry-After": "5"})
    return _json({"status": "ready"})


@router.get(
    "/metrics",
    response_class=Response,  # no JSON default in the document
    responses={
        200: {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(),
    },
)
async def metrics(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    m = gw.metrics
    stats = gw.engine.stats()
    m.engine_ready.set(1 if gw.engine.ready else 0)
    m.in_flight.set(gw.entered)  # read when scraped: nothing to count per request
    m.engine_running.set(stats.running)
    m.engine_waiting.set(stats.waiting)
    m.engine_kv_usage.set(stats.kv_cache_usage)
    m.adapters_resident.set(stats.adapters_resident)
    m.audit_queue_depth.set(gw.audit.depth())
    for server in getattr(gw.engine, "describe", list)():
        m.pool_server_healthy.labels(server["server"]).set(1 if server["healthy"] else 0)
    return Response(m.render(), media_type=m.content_type)
