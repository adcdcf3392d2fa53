"""Health, readiness, metrics and the admin API (admin token only, never a tenant key)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.auth import check_admin
from gateway.errors import EngineUnavailableError, NotFoundError
from gateway.service import Gateway, adapter_of
from gateway.settings import Settings

__all__ = ["router"]

router = APIRouter()


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    if gw.engine_failure is not None:
        return _json({"status": "engine_failed", "error": gw.engine_failure}, 503)
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    if not gw.engine.ready:
        raise EngineUnavailableError("The engine is not ready.", headers={"Retry-After": "5"})
    return _json({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    gw.metrics.engine_ready.set(1 if gw.engine.ready else 0)
    return Response(gw.metrics.render(), media_type=gw.metrics.content_type)


@router.post("/admin/tunes/{name}/load")
async def load_tune(name: str, request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    settings: Settings = request.app.state.settings
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    check_admin(token, request.headers.get("authorization"))
    tune = gw.catalogue.refresh(name)
    if tune is None:
        raise NotFoundError(
            f"No tune named `{name}` is in the catalogue.", param="name", code="tune_not_found"
        )
    if not gw.engine.ready:
        raise EngineUnavailableError("The engine is not ready.", headers={"Retry-After": "5"})
    loaded = await gw.engine.load_adapter(adapter_of(tune))
    if loaded:
        gw.metrics.adapter_loads.labels(tune.name, "ok").inc()
    return _json(
        {
            "object": "tune",
            "id": tune.name,
            "loaded": True,
            "already_loaded": not loaded,
            "adapter_id": tune.adapter_id,
        }
    )
