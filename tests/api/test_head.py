"""HEAD is GET without the body wherever GET is served; a key is still checked."""

from __future__ import annotations

import pytest

from tests.api.conftest import ADMIN, auth


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_a_health_check_by_head_is_answered_like_get_without_the_body(client, path):
    got = await client.get(path)
    head = await client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] != "0"
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["x-request-id"]


async def test_head_on_the_api_takes_a_key_as_get_does(client):
    assert (await client.head("/v1/models")).status_code == 401
    r = await client.head("/v1/models", headers=auth())
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) > 0
    r = await client.head("/v1/models/legal", headers=auth("narrow"))
    assert r.status_code == 404 and r.content == b""
    r = await client.head("/admin/tenants", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.content == b""


async def test_a_path_without_get_stays_a_405_and_allow_names_head_with_get(client):
    r = await client.head("/v1/chat/completions", headers=auth())
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await client.request("OPTIONS", "/v1/models", headers=auth())
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.json()["error"]["code"] == "method_not_allowed"


async def test_the_body_is_dropped_whatever_server_runs_the_app():
    from gateway.api.middleware import HeadAsGet

    seen: list[str] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        seen.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "HEAD", "path": "/healthz"}
    await HeadAsGet(app)(scope, None, send)
    assert seen == ["GET"] and scope["method"] == "HEAD"  # the server's scope is left as it was
    assert sent[1] == {"type": "http.response.body", "body": b""}
    await HeadAsGet(app)({**scope, "method": "GET"}, None, send)
    assert sent[3]["body"] == b"hello"
