"""One audit record per request, for every outcome, chained and free of secrets."""

from __future__ import annotations

import httpx
import orjson

from gateway.api import create_app
from gateway.audit.file_sink import audit_files
from gateway.audit.verify import verify_path
from gateway.auth import hash_key
from tests.api.conftest import KEYS, auth, write_config

CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}


def records(folder):
    out = []
    for f in audit_files(folder):
        out += [orjson.loads(line) for line in f.read_bytes().splitlines()]
    return out


async def test_every_outcome_has_exactly_one_record(tmp_path, engine):
    settings = write_config(tmp_path)
    policy = settings.policies_dir / "tenants.yaml"
    policy.write_text(
        policy.read_text().replace(
            "    tunes: [support]\n", "    tunes: [support]\n    limits: {requests_per_minute: 1}\n"
        )
    )
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            sent = [
                await c.post("/v1/chat/completions", json=CHAT, headers=auth()),
                await c.post(
                    "/v1/chat/completions",
                    json={**CHAT, "stream": True},
                    headers={**auth(), "x-request-id": "stream-1"},
                ),
                await c.post(
                    "/v1/completions", json={"model": "legal", "prompt": "hi"}, headers=auth()
                ),
                await c.get("/v1/models", headers=auth()),
                await c.get("/v1/models/legal", headers=auth()),
                await c.get("/v1/models/legal", headers=auth("narrow")),
                await c.post(
                    "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong-key"}
                ),
                await c.post(
                    "/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth()
                ),
                await c.post(
                    "/v1/chat/completions", json={**CHAT, "temperature": 9}, headers=auth()
                ),
                await c.post("/v1/chat/completions", json=CHAT, headers=auth("narrow")),
                await c.post("/v1/chat/completions", json=CHAT, headers=auth("narrow")),
            ]
            engine.ready = False
            sent.append(await c.post("/v1/chat/completions", json=CHAT, headers=auth()))
    statuses = [r.status_code for r in sent]
    assert statuses == [200, 200, 200, 200, 200, 404, 401, 404, 400, 200, 429, 503]
    recs = records(settings.audit_dir)
    assert [r["status"] for r in recs] == statuses
    assert [r["decision"] for r in recs] == ["served"] * 5 + ["denied"] * 4 + [
        "served",
        "denied",
        "failed",
    ]
    assert [r["route"] for r in recs[3:6]] == ["models"] * 3
    assert recs[5]["tenant"] == "narrow" and recs[5]["code"] == "model_not_found"
    assert recs[0]["tenant"] == "acme" and recs[0]["key_id"] == "acme-1"
    assert recs[0]["tune"] == "support" and recs[0]["finish_reason"] == "stop"
    assert recs[0]["prompt_tokens"] > 0 and recs[0]["completion_tokens"] == 6
    assert recs[1]["request_id"] == "stream-1" and recs[1]["completion_tokens"] == 6
    assert recs[6]["tenant"] is None and recs[6]["code"] == "invalid_api_key"
    assert recs[10]["code"] == "requests_rate_limit_exceeded"
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    text = b"".join(f.read_bytes() for f in audit_files(settings.audit_dir)).decode()
    for key in [*KEYS.values(), "wrong-key", hash_key(KEYS["acme"]), "hello there"]:
        assert key not in text  # no keys, no hashes of keys, no prompts by default
    assert verify_path(settings.audit_dir).ok
