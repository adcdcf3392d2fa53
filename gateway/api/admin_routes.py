"""The admin API (admin token only, never a tenant key): tunes, tenants, bindings, keys, policy."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.api.errors import error_responses, validation_error
from gateway.api.wire import request_body
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
# Documents the admin token in the OpenAPI document; `check_admin` reads the header itself.
_ADMIN_TOKEN = HTTPBearer(
    scheme_name="adminToken", description="TUNEGATE_ADMIN_TOKEN", auto_error=False
)


async def _admin(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_ADMIN_TOKEN)],
) -> None:
    settings: Settings = request.app.state.settings
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    check_admin(token, request.headers.get("authorization"))


# Every admin route: the token refused (401), and the store or engine unavailable (503).
ADMIN_ERRORS = (401, 503)
router = APIRouter(
    prefix="/admin", dependencies=[Depends(_admin)], responses=error_responses(*ADMIN_ERRORS)
)
# A path segment names a tenant, tune or key: no `/` (it would address another route).
Segment = Annotated[str, Path(pattern=r"^[^/]{1,128}$")]


class BindBody(BaseModel):
    tune: str = Field(min_length=1, max_length=128)


class KeyBody(BaseModel):
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


# Response bodies, for the OpenAPI document (the routes build dicts).
class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TuneLoaded(_Doc):
    object: Literal["tune"]
    id: str
    loaded: Literal[True]
    already_loaded: bool
    adapter_id: int


class TuneUnloaded(_Doc):
    object: Literal["tune"]
    id: str
    loaded: Literal[False]


class KeyView(_Doc):
    id: str
    tenant: str
    created_at: float
    revoked: bool
    source: str


class KeyList(_Doc):
    object: Literal["list"]
    data: list[KeyView]


class NewKey(_Doc):
    id: str
    tenant: str
    key: str
    note: str


class RevokedKey(_Doc):
    id: str
    tenant: str
    revoked: Literal[True]


class TenantView(_Doc):
    name: str
    tune: str | None
    default_tune: str | None
    tunes: list[str]
    limits: dict[str, int | None]


class Switch(_Doc):
    from_: str | None = Field(alias="from")
    to: str
    actor: str
    at: float


class TenantDetail(TenantView):
    keys: list[KeyView]
    switches: list[Switch]
    concurrent_requests: int


class TenantList(_Doc):
    object: Literal["list"]
    data: list[TenantView]


class BindingSwitched(Switch):
    tenant: str


class PolicyValid(_Doc):
    valid: Literal[True]
    tenants: int


class PolicyReloaded(_Doc):
    reloaded: Literal[True]
    tenants: int


class EngineView(_Doc):
    ready: bool
    kind: str
    running: int
    waiting: int
    kv_cache_usage: float
    adapters_resident: int
    servers: list[dict[str, Any]]


def _ok(model: type[BaseModel], *errors: int, status: int = 200) -> dict[str, Any]:
    """Decorator arguments documenting a route's answer and its own errors."""
    return {
        "status_code": status,
        "responses": {status: {"model": model}, **error_responses(*errors)},
    }


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


@router.post("/tunes/{name}/load", **_ok(TuneLoaded, 400, 404, 413))
async def load_tune(name: Segment, request: Request) -> Response:
    gw = _gw(request)
    try:
        refreshed = gw.catalogue.refresh(name)
    except ConfigError as exc:  # a broken manifest on disk: refused, the loaded one stays
        raise InvalidRequestError(str(exc), param="name", code="invalid_manifest") from None
    tune = _tune(name, refreshed)
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


@router.post("/tunes/{name}/unload", **_ok(TuneUnloaded, 400, 404, 409, 413))
async def unload_tune(name: Segment, request: Request) -> Response:
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


@router.get("/tenants", **_ok(TenantList))
async def list_tenants(request: Request) -> Response:
    gw = _gw(request)
    data = [await _tenant_view(gw, t) for _, t in sorted(gw.state.policy.tenants.items())]
    return _json({"object": "list", "data": data})


@router.get("/tenants/{name}", **_ok(TenantDetail, 404))
async def show_tenant(name: Segment, request: Request) -> Response:
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


@router.put(
    "/tenants/{name}/tune",
    **_ok(BindingSwitched, 400, 404, 413),
    openapi_extra=request_body(BindBody),
)
async def bind_tune(name: Segment, request: Request) -> Response:
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


@router.get("/tenants/{name}/keys", **_ok(KeyList, 404))
async def list_keys(name: Segment, request: Request) -> Response:
    gw = _gw(request)
    _tenant(gw, name)
    keys = await gw.state.store.list_keys(name)
    return _json({"object": "list", "data": [_key_view(k) for k in keys]})


@router.post(
    "/tenants/{name}/keys",
    **_ok(NewKey, 400, 404, 413, status=201),
    openapi_extra=request_body(KeyBody, required=False),
)
async def create_key(name: Segment, request: Request) -> Response:
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


@router.delete("/tenants/{name}/keys/{key_id}", **_ok(RevokedKey, 404))
async def revoke_key(name: Segment, key_id: Segment, request: Request) -> Response:
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


@router.post("/policy/validate", **_ok(PolicyValid, 400, 413))
async def validate_policy(request: Request) -> Response:
    policy = _load_policy(request)
    return _json({"valid": True, "tenants": len(policy.tenants)})


@router.post("/policy/reload", **_ok(PolicyReloaded, 400, 413))
async def reload_policy(request: Request) -> Response:
    gw = _gw(request)
    policy = _load_policy(request)  # on error the previous policy stays in force
    gw.state.policy = policy
    await gw.state.seed_keys()
    gw.state.invalidate(None)
    await gw.state.store.publish({"kind": "policy"})
    return _json({"reloaded": True, "tenants": len(policy.tenants)})


@router.get("/engine", **_ok(EngineView))
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
