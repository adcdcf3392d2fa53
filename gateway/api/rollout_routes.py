"""Tune rollout (admin token only): list, promote, canary, rollback — atomic on every replica."""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.api.admin_routes import ADMIN_ERRORS, Segment, _actor, _admin
from gateway.api.errors import error_responses, validation_error
from gateway.api.wire import request_body
from gateway.catalogue import Tune
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.service import Gateway, adapter_of
from gateway.store import Rollout, RolloutChange
from gateway.yamlconfig import ConfigError

__all__ = ["router"]

router = APIRouter(
    prefix="/admin/tunes",
    dependencies=[Depends(_admin)],
    responses=error_responses(*ADMIN_ERRORS),
)


class PromoteBody(BaseModel):
    version: str = Field(min_length=1, max_length=32)
    force: bool = False


class CanaryBody(BaseModel):
    version: str = Field(min_length=1, max_length=32)
    weight: int = Field(ge=0, le=100)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TuneVersion(_Doc):
    name: str
    version: str
    status: str
    loaded: bool
    canary_weight: int
    eval_score: float | None
    description: str


class TuneList(_Doc):
    object: Literal["list"]
    data: list[TuneVersion]


class RolloutView(_Doc):
    live: str
    canary: str | None
    weight: int


class RolloutChanged(_Doc):
    tune: str
    action: Literal["promote", "canary", "rollback"]
    before: RolloutView | None
    after: RolloutView
    actor: str
    at: float
    forced: bool


_CHANGED = {200: {"model": RolloutChanged}, **error_responses(400, 404, 413)}


def _json(payload: object) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def _body(model: type[BaseModel], request: Request) -> Any:
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise validation_error(exc) from None


def _refresh(gw: Gateway, name: str) -> None:
    """Re-read a manifest; a broken one is refused and the loaded one stays."""
    try:
        gw.catalogue.refresh(name)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc), param="name", code="invalid_manifest") from None


def _version(gw: Gateway, name: str, version: str) -> Tune:
    if gw.catalogue.get(name) is None:
        raise NotFoundError(
            f"No tune named `{name}` is in the catalogue.", param="name", code="tune_not_found"
        )
    tune = gw.catalogue.get_version(name, version)
    if tune is None:
        raise NotFoundError(
            f"Tune `{name}` has no version `{version}`.", param="version", code="version_not_found"
        )
    if tune.status == "retired":
        raise InvalidRequestError(
            f"`{name}@{version}` is retired.", param="version", code="version_retired"
        )
    return tune


async def _current(gw: Gateway, name: str) -> Rollout:
    rollout = await gw.state.store.get_rollout(name)
    if rollout is not None:
        return rollout
    live = gw.catalogue.get(name)
    assert live is not None
    canary = next((t for t in gw.catalogue.versions(name) if t.status == "canary"), None)
    return Rollout(live.version, None if canary is None else canary.version, 0)


async def _apply(
    request: Request, name: str, action: str, after: Rollout, forced: bool = False
) -> Response:
    gw = _gw(request)
    before = await _current(gw, name)
    for version in {after.live, after.canary} - {None}:
        await gw.load_adapter(adapter_of(_version(gw, name, str(version))))  # refuse bad ones now
    change = RolloutChange(name, action, before, after, _actor(request), time.time(), forced)
    await gw.state.store.set_rollout(change)
    gw.state.invalidate({"kind": "rollout", "tune": name})
    await gw.state.store.publish({"kind": "rollout", "tune": name})
    gw.metrics.rollouts.labels(name, action).inc()
    return _json(change.as_dict())


@router.get("", responses={200: {"model": TuneList}, **error_responses(400)})
async def list_tunes(request: Request) -> Response:
    gw = _gw(request)
    loaded = await gw.engine.loaded_adapters()
    rows = []
    for name in gw.catalogue.names():
        _refresh(gw, name)  # evaluation results land in the manifests
        rollout = await _current(gw, name)
        for tune in gw.catalogue.versions(name):
            status = tune.status
            if tune.version == rollout.live:
                status = "live"
            elif tune.version == rollout.canary and rollout.weight > 0:
                status = "canary"
            elif status in ("live", "canary"):
                status = "draft"
            rows.append(
                {
                    "name": name,
                    "version": tune.version,
                    "status": status,
                    "loaded": tune.adapter_id in loaded,
                    "canary_weight": rollout.weight if tune.version == rollout.canary else 0,
                    "eval_score": tune.eval_score,
                    "description": tune.description,
                }
            )
    return _json({"object": "list", "data": rows})


@router.post("/{name}/promote", responses=_CHANGED, openapi_extra=request_body(PromoteBody))
async def promote(name: Segment, request: Request) -> Response:
    body: PromoteBody = await _body(PromoteBody, request)
    gw = _gw(request)
    _refresh(gw, name)  # pick up evaluation results written since start
    tune = _version(gw, name, body.version)
    threshold = tune.eval_threshold
    if (
        threshold is not None
        and not body.force
        and (tune.eval_score is None or tune.eval_score < threshold)
    ):
        score = "no evaluation" if tune.eval_score is None else f"pass rate {tune.eval_score:.2f}"
        raise InvalidRequestError(
            f"`{name}@{body.version}` has {score}, below the manifest's threshold "
            f"{threshold:.2f}; evaluate it, or promote with force (recorded).",
            param="version",
            code="eval_below_threshold",
        )
    current = await _current(_gw(request), name)
    canary = None if current.canary == body.version else current.canary
    after = Rollout(body.version, canary, current.weight if canary else 0)
    return await _apply(request, name, "promote", after, body.force)


@router.post("/{name}/canary", responses=_CHANGED, openapi_extra=request_body(CanaryBody))
async def canary(name: Segment, request: Request) -> Response:
    body: CanaryBody = await _body(CanaryBody, request)
    _refresh(_gw(request), name)  # a version built since start
    _version(_gw(request), name, body.version)
    current = await _current(_gw(request), name)
    if body.version == current.live:
        raise InvalidRequestError(
            f"`{name}@{body.version}` is already live.", param="version", code="version_is_live"
        )
    after = Rollout(current.live, body.version if body.weight else None, body.weight)
    return await _apply(request, name, "canary", after)


def _previous_live(history: list[RolloutChange]) -> str | None:
    """Promotions stack up and each rollback pops one: the live version before the last
    promotion that has not been rolled back yet."""
    undone = 0
    for change in history:  # newest first
        if change.before is None or change.before.live == change.after.live:
            continue
        if change.action == "rollback":
            undone += 1
        elif change.action == "promote":
            if undone:
                undone -= 1
            else:
                return change.before.live
    return None


@router.post("/{name}/rollback", responses=_CHANGED)
async def rollback(name: Segment, request: Request) -> Response:
    gw = _gw(request)
    if gw.catalogue.get(name) is None:
        raise NotFoundError(
            f"No tune named `{name}` is in the catalogue.", param="name", code="tune_not_found"
        )
    current = await _current(gw, name)
    history = await gw.state.store.rollout_history(name, limit=100)
    previous = _previous_live(history)
    if current.canary:
        return await _apply(request, name, "rollback", Rollout(current.live, None, 0))
    if previous is None:
        raise InvalidRequestError(
            f"Tune `{name}` has no earlier live version to roll back to.",
            param="name",
            code="nothing_to_roll_back",
        )
    return await _apply(request, name, "rollback", Rollout(previous, None, 0))
