"""Policy through the app: limits, headers, parameters, input rules, bindings, keys, reload."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.api import create_app
from gateway.auth import hash_key
from gateway.store.memory import MemoryStore
from tests.api.conftest import ADMIN, KEYS, auth, write_config

ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}

POLICY = f"""
default:
  limits: {{requests_per_minute: 1000, max_tokens: 8}}
  input_rules:
    max_messages: 3
    deny_patterns: [{{id: no-secrets, pattern: "(?i)password"}}]
tenants:
  - name: acme
    keys: [{{id: acme-1, sha256: {hash_key(KEYS["acme"])}}}]
    tunes: [support, legal, extract]
    default_tune: legal
    limits: {{requests_per_minute: 3, tokens_per_minute: 1000}}
  - name: narrow
    keys: [{{id: narrow-1, sha256: {hash_key(KEYS["narrow"])}}}]
    tunes: [support]
    limits: {{max_concurrent: 1, tokens_per_minute: 40}}
    allowed_parameters: [temperature, max_tokens, stream]
    input_rules:
      deny_patterns: [{{id: no-bananas, pattern: banana}}]
"""


@pytest.fixture
def settings(tmp_path):
    s = write_config(tmp_path)
    (s.policies_dir / "tenants.yaml").write_text(POLICY)
    return s


@pytest.fixture
def store():
    return MemoryStore()


@pytest.fixture
async def client(settings, engine, store):
    app = create_app(settings, engine=engine, store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c


async def test_request_limit_trips_at_the_limit_with_headers(client, validate_schema):
    for remaining in (2, 1, 0):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.status_code == 429
    validate_schema("ErrorResponse", r.json())
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "requests_rate_limit_exceeded"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth("narrow"))
    assert r.status_code == 200  # other tenants are untouched
    metrics = (await client.get("/metrics")).text
    assert 'tunegate_rate_limited_total{reason="requests",tenant="acme"} 1.0' in metrics


async def test_tokens_are_reserved_then_reconciled(client, engine):
    # narrow: 40 tokens/minute, max_tokens capped at 8 by default. Prompt "user: hello there"
    # is 3 words; each answer uses 6 tokens, so 3 + 8 = 11 is reserved and 9 kept.
    used = []
    for _ in range(4):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=auth("narrow"))
        assert r.status_code == 200, r.text
        used.append(int(r.headers["x-ratelimit-remaining-tokens"]))
        assert engine.requests[-1].max_tokens == 8  # clamped by the default cap
    # After each request the reservation (11) is taken and 2 unused tokens come back.
    assert used == [29, 20, 11, 2]
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth("narrow"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "tokens_rate_limit_exceeded"


async def test_concurrency_limit_and_release(client, engine, store):
    gate = engine.hold()
    first = asyncio.create_task(
        client.post("/v1/chat/completions", json=CHAT, headers=auth("narrow"))
    )
    await asyncio.sleep(0.05)
    assert await store.slots_in_use("narrow") == 1
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth("narrow"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "concurrency_limit_exceeded"
    gate.set()
    assert (await first).status_code == 200
    assert await store.slots_in_use("narrow") == 0
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("narrow")
    )
    assert r.status_code == 200 and await store.slots_in_use("narrow") == 0


async def test_slot_released_when_engine_fails(client, engine, store):
    async def broken(request):
        from gateway.errors import EngineUnavailableError

        raise EngineUnavailableError("down")
        yield  # pragma: no cover

    engine.stream = broken
    for stream in (False, True):
        r = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": stream}, headers=auth("narrow")
        )
        assert r.status_code == 503
    assert await store.slots_in_use("narrow") == 0


async def test_allowed_parameters_and_input_rules(client, engine, validate_schema):
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "top_p": 0.5}, headers=auth("narrow")
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "parameter_not_allowed"
    assert r.json()["error"]["param"] == "top_p"
    validate_schema("ErrorResponse", r.json())
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "temperature": 0.5}, headers=auth("narrow")
    )
    assert r.status_code == 200
    for tenant, text, rule in (
        ("narrow", "I like BANANA and banana", "no-bananas"),
        ("narrow", "my Password is x", "no-secrets"),
        ("acme", "the password", "no-secrets"),
    ):
        r = await client.post(
            "/v1/chat/completions",
            headers=auth(tenant),
            json={**CHAT, "messages": [{"role": "user", "content": text}]},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "input_rule_violation"
        assert rule in r.json()["error"]["message"]
        assert "banana" not in r.json()["error"]["message"].replace("no-bananas", "")
    r = await client.post(
        "/v1/completions", headers=auth("acme"), json={"model": "support", "prompt": "password?"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    many = [{"role": "user", "content": "hi"}] * 4
    r = await client.post("/v1/chat/completions", json={**CHAT, "messages": many}, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
    metrics = (await client.get("/metrics")).text
    assert (
        'tunegate_policy_denials_total{reason="input_rule_violation",tenant="narrow"} 2.0'
        in metrics
    )


async def test_internal_looking_headers_are_not_trusted(client, engine):
    spoof = {
        "X-Tenant": "acme",
        "X-Tunegate-Tenant": "acme",
        "X-Tune": "legal",
        "X-Tunegate-Tune": "legal",
        "X-Forwarded-User": "acme",
        "X-Upstream": "evil",
    }
    r = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "default"},
        headers={**auth("narrow"), **spoof},
    )
    assert r.status_code == 200 and r.json()["model"] == "test-base"
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "legal"}, headers={**auth("narrow"), **spoof}
    )
    assert r.status_code == 404


async def test_bind_switches_default_and_is_recorded(client, engine):
    r = await client.post("/v1/chat/completions", json={**CHAT, "model": "default"}, headers=auth())
    assert r.json()["model"] == "legal"
    r = await client.put(
        "/admin/tenants/acme/tune",
        json={"tune": "extract"},
        headers={**ADMIN_H, "X-Tunegate-Actor": "alice"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["from"], r.json()["to"], r.json()["actor"]) == ("legal", "extract", "alice")
    r = await client.post("/v1/chat/completions", json={**CHAT, "model": "default"}, headers=auth())
    assert r.json()["model"] == "extract"
    show = (await client.get("/admin/tenants/acme", headers=ADMIN_H)).json()
    assert show["tune"] == "extract" and show["switches"][0]["actor"] == "alice"
    r = await client.put("/admin/tenants/narrow/tune", json={"tune": "legal"}, headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "tune_not_allowed"
    r = await client.put("/admin/tenants/ghost/tune", json={"tune": "legal"}, headers=ADMIN_H)
    assert r.status_code == 404
    r = await client.put("/admin/tenants/acme/tune", json={"tune": "legal"}, headers=auth())
    assert r.status_code == 401


async def test_keys_create_list_revoke(client, validate_schema):
    r = await client.post("/admin/tenants/narrow/keys", json={"id": "ci"}, headers=ADMIN_H)
    assert r.status_code == 201
    key = r.json()["key"]
    assert (
        await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200
    listed = (await client.get("/admin/tenants/narrow/keys", headers=ADMIN_H)).json()["data"]
    assert {k["id"] for k in listed} == {"narrow-1", "ci"}
    assert key not in str(listed) and hash_key(key) not in str(listed)
    r = await client.post("/admin/tenants/narrow/keys", json={"id": "ci"}, headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "key_exists"
    r = await client.delete("/admin/tenants/narrow/keys/ci", headers=ADMIN_H)
    assert r.status_code == 200
    r = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    validate_schema("ErrorResponse", r.json())
    r = await client.delete("/admin/tenants/narrow/keys/ci", headers=ADMIN_H)
    assert r.status_code == 404
    # A key declared in the policy file can be revoked too.
    assert (
        await client.delete("/admin/tenants/narrow/keys/narrow-1", headers=ADMIN_H)
    ).status_code == 200
    assert (await client.get("/v1/models", headers=auth("narrow"))).status_code == 401


async def test_policy_validate_and_reload_keep_previous_on_error(client, settings):
    r = await client.post("/admin/policy/validate", headers=ADMIN_H)
    assert r.json() == {"valid": True, "tenants": 2}
    path = settings.policies_dir / "tenants.yaml"
    good = path.read_text()
    path.write_text(good.replace("requests_per_minute: 3,", "requests_per_minute: -3,"))
    r = await client.post("/admin/policy/reload", headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_policy"
    msg = r.json()["error"]["message"]
    assert "tenants.yaml:12" in msg and "requests_per_minute" in msg
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.headers["x-ratelimit-limit-requests"] == "3"  # previous policy still in force
    path.write_text(good.replace("requests_per_minute: 3,", "requests_per_minute: 7,"))
    assert (await client.post("/admin/policy/reload", headers=ADMIN_H)).status_code == 200
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.headers["x-ratelimit-limit-requests"] == "7"


async def test_admin_lists_tenants(client):
    data = (await client.get("/admin/tenants", headers=ADMIN_H)).json()["data"]
    assert [t["name"] for t in data] == ["acme", "narrow"]
    assert data[0]["limits"]["requests_per_minute"] == 3 and data[0]["limits"]["max_tokens"] == 8
    assert data[1]["limits"]["requests_per_minute"] == 1000


async def test_requests_in_flight_finish_on_the_old_tune(client, engine):
    gate = engine.hold()
    body = {**CHAT, "model": "default"}
    before = asyncio.create_task(client.post("/v1/chat/completions", json=body, headers=auth()))
    await asyncio.sleep(0.05)
    r = await client.put("/admin/tenants/acme/tune", json={"tune": "support"}, headers=ADMIN_H)
    assert r.status_code == 200
    after = asyncio.create_task(client.post("/v1/chat/completions", json=body, headers=auth()))
    await asyncio.sleep(0.05)
    gate.set()
    first, second = await before, await after
    assert first.json()["model"] == "legal"
    assert first.json()["choices"][0]["message"]["content"].startswith("[legal]")
    assert second.json()["model"] == "support"
    assert second.json()["choices"][0]["message"]["content"].startswith("[support]")
