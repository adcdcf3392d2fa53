"""Every route but health and metrics refuses a request without a valid key, whatever the path,
method or Host header: the app's routes are walked, so a new route cannot slip through."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from gateway.api import create_app
from tests.api.conftest import ADMIN, KEYS, EchoEngine

OPEN = {"/healthz", "/readyz", "/metrics"}


def routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        if not isinstance(route, Route) or route.path in OPEN:
            continue
        if route.path.startswith(("/docs", "/redoc", "/openapi")):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        out.extend((method, path) for method in sorted(route.methods or ()) if method != "HEAD")
    return out


def test_the_walk_covers_the_api(settings):
    found = routes(create_app(settings, engine=EchoEngine()))
    paths = {p for _, p in found}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= paths
    assert {"/admin/tenants", "/admin/tunes", "/admin/engine"} <= paths
    assert len(found) >= 18


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer tg-not-a-key"},
        {"Authorization": f"Basic {KEYS['acme']}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {ADMIN}", "Host": "localhost"},  # not a tenant key
        {"Authorization": "Bearer x", "Host": "evil.example", "X-Forwarded-Host": "localhost"},
    ],
    ids=["none", "unknown", "basic", "empty", "admin-as-tenant", "host"],
)
async def test_every_route_refuses_without_a_valid_key(client, settings, headers):
    app = create_app(settings, engine=EchoEngine())
    is_admin_token = headers.get("Authorization") == f"Bearer {ADMIN}"
    for method, path in routes(app):
        if is_admin_token and path.startswith("/admin"):
            continue  # the admin token is the right credential there
        r = await client.request(method, path, headers=headers, json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_tenant_key_never_opens_the_admin_api(client, settings):
    app = create_app(settings, engine=EchoEngine())
    for method, path in routes(app):
        if path.startswith("/admin"):
            r = await client.request(
                method, path, headers={"Authorization": f"Bearer {KEYS['acme']}"}, json={}
            )
            assert r.status_code == 401, (method, path, r.status_code)


async def test_unknown_paths_and_methods_are_not_served(client):
    for method, path in [("GET", "/v1/chat/completions"), ("DELETE", "/v1/models"),
                         ("POST", "/v1/load_lora_adapter"), ("GET", "/admin/../v1/models"),
                         ("POST", "/v1/unload_lora_adapter")]:  # fmt: skip
        r = await client.request(method, path)
        assert r.status_code in (401, 404, 405), (method, path, r.status_code)
        assert "error" in r.json()
