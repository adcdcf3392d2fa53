"""The admin API (admin token only, never a tenant key): tunes, tenants, bindings, keys, policy."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from gateway.api.errors import validation_error
from gateway.auth import check_admin, hash_key, new_key
from gateway.catalogue import Tune
from gateway.errors import EngineUnavailableError, InvalidRequestError, NotFoundError
from gateway.policy import PolicySet, Tenant, load_policy
from gateway.service import Gateway, adapter_of
from gateway.settings import Settings
from gateway.store import BindingChange, StoredKey
from gateway.yamlconfig import ConfigError

__all__ = ["router"]

_ACTOR = re.compile(r"^[A-Za-z0-9@._-]{1,64}$")


async def _admin(request: Request) -> None:
    settings: Settings = request.app.state.settings
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    check_admin(token, request.headers.get("authorization"))


router = APIRouter(prefix="/admin", dependencies=[Depends(_admin)])


class BindBody(BaseModel):
    tune: str = Field(min_length=1, max_length=128)


class KeyBody(BaseModel):
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _tenant(gw: Gateway, name: str) -> Tenant:
    tenant = gw.state.policy.tenants.get(name)
    if tenant is None:
        raise NotFoundError(f"No tenant named `{name}`.", param="tenant", code="tenant_not_found")
    return tenant


def _actor(request: Request) -> str:
    actor = request.headers.get("x-tunegate-actor", "admin")
    return actor if _ACTOR.match(actor) else "admin"


async def _parse(model: type[BaseModel], request: Request) -> Any:
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise validation_error(exc) from None


def _key_view(key: StoredKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "tenant": key.tenant,
        "created_at": key.created_at,
        "revoked": key.revoked,
        "source": key.source,
    }


def _tune(name: str, tune: Tune | None) -> Tune:
    if tune is None:
        raise NotFoundError(
            f"No tune named `{name}` is in the catalogue.", param="name", code="tune_not_found"
        )
    return tune


@router.post("/tunes/{name}/load")
async def load_tune(name: str, request: Request) -> Response:
    gw = _gw(request)
    tune = _tune(name, gw.catalogue.refresh(name))
    if not gw.engine.ready:
        raise EngineUnavailableError("The engine is not ready.", headers={"Retry-After": "5"})
    loaded = await gw.load_adapter(adapter_of(tune))
    return _json(
        {
            "object": "tune",
            "id": tune.name,
            "loaded": True,
            "already_loaded": not loaded,
            "adapter_id": tune.adapter_id,
        }
    )


@router.post("/tunes/{name}/unload")
async def unload_tune(name: str, request: Request) -> Response:
    gw = _gw(request)
    tune = _tune(name, gw.catalogue.get(name))
    await gw.unload_adapter(tune)
    return _json({"object": "tune", "id": tune.name, "loaded": False})


async def _tenant_view(gw: Gateway, tenant: Tenant) -> dict[str, Any]:
    limits = tenant.limits
    return {
        "name": tenant.name,
        "tune": await gw.state.binding(tenant),
        "default_tune": tenant.default_tune,
        "tunes": sorted(tenant.tunes),
        "limits": {k: getattr(limits, k) for k in limits.__slots__},
    }


@router.get("/tenants")
async def list_tenants(request: Request) -> Response:
    gw = _gw(request)
    data = [await _tenant_view(gw, t) for _, t in sorted(gw.state.policy.tenants.items())]
    return _json({"object": "list", "data": data})


@router.get("/tenants/{name}")
async def show_tenant(name: str, request: Request) -> Response:
    gw = _gw(request)
    tenant = _tenant(gw, name)
    view = await _tenant_view(gw, tenant)
    store = gw.state.store
    view["keys"] = [_key_view(k) for k in await store.list_keys(name)]
    view["switches"] = [
        {"from": c.from_tune, "to": c.to_tune, "actor": c.actor, "at": c.at}
        for c in await store.binding_history(name)
    ]
    view["concurrent_requests"] = await store.slots_in_use(name)
    return _json(view)


@router.put("/tenants/{name}/tune")
async def bind_tune(name: str, request: Request) -> Response:
    gw = _gw(request)
    tenant = _tenant(gw, name)
    body: BindBody = await _parse(BindBody, request)
    if body.tune != gw.base_model and (
        body.tune not in tenant.tunes or gw.catalogue.get(body.tune) is None
    ):
        raise InvalidRequestError(
            f"Tenant `{name}` may not use tune `{body.tune}` (allowed: "
            f"{', '.join(sorted(tenant.tunes)) or 'none'}).",
            param="tune",
            code="tune_not_allowed",
        )
    previous = await gw.state.binding(tenant)
    change = BindingChange(name, previous, body.tune, _actor(request), time.time())
    await gw.state.store.set_binding(change)
    gw.state.invalidate({"kind": "binding", "tenant": name})
    await gw.state.store.publish({"kind": "binding", "tenant": name})
    gw.metrics.tune_switches.labels(name).inc()
    return _json(
        {
            "tenant": name,
            "from": change.from_tune,
            "to": change.to_tune,
            "actor": change.actor,
            "at": change.at,
        }
    )


@router.get("/tenants/{name}/keys")
async def list_keys(name: str, request: Request) -> Response:
    gw = _gw(request)
    _tenant(gw, name)
    keys = await gw.state.store.list_keys(name)
    return _json({"object": "list", "data": [_key_view(k) for k in keys]})


@router.post("/tenants/{name}/keys")
async def create_key(name: str, request: Request) -> Response:
    gw = _gw(request)
    _tenant(gw, name)
    body: KeyBody = await _parse(KeyBody, request)
    existing = {k.key_id for k in await gw.state.store.list_keys(name)}
    key_id = body.id or f"{name}-{len(existing) + 1}"
    if key_id in existing:
        raise InvalidRequestError(
            f"Tenant `{name}` already has a key `{key_id}`.", param="id", code="key_exists"
        )
    key = new_key()
    await gw.state.store.put_key(StoredKey(hash_key(key), key_id, name, time.time()))
    return _json(
        {
            "id": key_id,
            "tenant": name,
            "key": key,
            "note": "Store this key now: it is shown once and kept only as a hash.",
        },
        201,
    )


@router.delete("/tenants/{name}/keys/{key_id}")
async def revoke_key(name: str, key_id: str, request: Request) -> Response:
    gw = _gw(request)
    _tenant(gw, name)
    store = gw.state.store
    match = [k for k in await store.list_keys(name) if k.key_id == key_id]
    if not match or not await store.revoke_key(name, key_id):
        raise NotFoundError(
            f"Tenant `{name}` has no active key `{key_id}`.", param="key_id", code="key_not_found"
        )
    gw.state.invalidate({"kind": "key", "hash": match[0].key_hash})
    await store.publish({"kind": "key", "hash": match[0].key_hash})
    return _json({"id": key_id, "tenant": name, "revoked": True})


def _load_policy(request: Request) -> PolicySet:
    """The policy files on disk, validated; a bad file is a 400 naming file, field and line."""
    gw = _gw(request)
    settings: Settings = request.app.state.settings
    try:
        return load_policy(settings.policies_dir, set(gw.catalogue.names()))
    except ConfigError as exc:
        raise InvalidRequestError(str(exc), param=exc.field, code="invalid_policy") from None


@router.post("/policy/validate")
async def validate_policy(request: Request) -> Response:
    policy = _load_policy(request)
    return _json({"valid": True, "tenants": len(policy.tenants)})


@router.post("/policy/reload")
async def reload_policy(request: Request) -> Response:
    gw = _gw(request)
    policy = _load_policy(request)  # on error the previous policy stays in force
    gw.state.policy = policy
    await gw.state.seed_keys()
    gw.state.invalidate(None)
    await gw.state.store.publish({"kind": "policy"})
    return _json({"reloaded": True, "tenants": len(policy.tenants)})


@router.get("/engine")
async def engine_state(request: Request) -> Response:
    """The engine as the gateway sees it: readiness, load, and each pool server."""
    gw: Gateway = request.app.state.gateway
    stats = gw.engine.stats()
    servers = getattr(gw.engine, "describe", list)()
    return _json(
        {
            "ready": gw.engine.ready,
            "kind": request.app.state.settings.engine.kind,
            "running": stats.running,
            "waiting": stats.waiting,
            "kv_cache_usage": stats.kv_cache_usage,
            "adapters_resident": stats.adapters_resident,
            "servers": servers,
        }
    )
