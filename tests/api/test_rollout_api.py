"""Versions, promote, sticky canary and rollback through the admin API (engine double)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.api.conftest import ADMIN, auth, write_config

ADMIN_H = {"Authorization": f"Bearer {ADMIN}", "X-Tunegate-Actor": "ops"}
VERSIONS = """name: support
base_model: test-base
versions:
  - {version: "1", adapter_path: adapter, rank: 8, status: live}
  - {version: "2", adapter_path: adapter, rank: 8, status: draft}
  - {version: "0", adapter_path: adapter, rank: 8, status: retired}
"""


@pytest.fixture
def settings(tmp_path):
    s = write_config(tmp_path)
    (s.tunes_dir / "support" / "tune.yaml").write_text(VERSIONS)
    return s


async def served(client, engine, user, model="support"):
    r = await client.post(
        "/v1/chat/completions",
        headers=auth(),
        json={"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    return engine.requests[-1].adapter.name


async def test_versions_addressable_and_retired_hidden(client, engine):
    assert await served(client, engine, "u") == "support@1"
    assert await served(client, engine, "u", "support@2") == "support@2"
    r = await client.post(
        "/v1/chat/completions",
        headers=auth(),
        json={"model": "support@0", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404
    r = await client.post(
        "/v1/chat/completions",
        headers=auth("narrow"),
        json={"model": "legal@1", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404  # a version of a tune the tenant may not use


async def test_canary_split_is_sticky_then_promote_and_rollback(client, engine, settings):
    r = await client.post(
        "/admin/tunes/support/canary", json={"version": "2", "weight": 30}, headers=ADMIN_H
    )
    assert r.status_code == 200, r.text
    users = [f"user-{i}" for i in range(300)]
    first = {u: await served(client, engine, u) for u in users}
    share = Counter(first.values())["support@2"] / len(users)
    assert 0.22 <= share <= 0.38, share
    for u in users[:50]:  # sticky per end user
        assert await served(client, engine, u) == first[u]
    listed = {
        (t["name"], t["version"]): t
        for t in (await client.get("/admin/tunes", headers=ADMIN_H)).json()["data"]
    }
    assert listed[("support", "2")]["status"] == "canary"
    assert listed[("support", "2")]["canary_weight"] == 30
    assert listed[("support", "0")]["status"] == "retired"
    r = await client.post("/admin/tunes/support/promote", json={"version": "2"}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["after"] == {"live": "2", "canary": None, "weight": 0}
    assert {await served(client, engine, u) for u in users[:30]} == {"support@2"}
    r = await client.post("/admin/tunes/support/rollback", headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["after"]["live"] == "1"
    assert r.json()["actor"] == "ops"
    assert {await served(client, engine, u) for u in users[:30]} == {"support@1"}
    r = await client.post("/admin/tunes/support/rollback", headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "nothing_to_roll_back"
    metrics = (await client.get("/metrics")).text
    assert (
        'tunegate_requests_total{route="chat",status="2xx",tenant="acme",tune="support",'
        'version="2"}' in metrics
    )


async def test_rollout_errors(client):
    for path, body, status, code in [
        ("/admin/tunes/ghost/promote", {"version": "1"}, 404, "tune_not_found"),
        ("/admin/tunes/support/promote", {"version": "9"}, 404, "version_not_found"),
        ("/admin/tunes/support/promote", {"version": "0"}, 400, "version_retired"),
        ("/admin/tunes/support/canary", {"version": "1", "weight": 10}, 400, "version_is_live"),
        ("/admin/tunes/support/canary", {"version": "2", "weight": 101}, 400, "invalid_value"),
    ]:
        r = await client.post(path, json=body, headers=ADMIN_H)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), path
    r = await client.post("/admin/tunes/support/promote", json={"version": "2"}, headers=auth())
    assert r.status_code == 401


async def test_promote_needs_an_eval_at_the_threshold(client, settings):
    path = settings.tunes_dir / "support" / "tune.yaml"
    path.write_text(
        VERSIONS.replace("base_model: test-base\n", "base_model: test-base\neval_threshold: 0.9\n")
    )
    r = await client.post("/admin/tunes/support/promote", json={"version": "2"}, headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "eval_below_threshold"
    path.write_text(
        path.read_text().replace("status: draft}", "status: draft, eval: {pass_rate: 0.95}}")
    )
    listed = (await client.get("/admin/tunes", headers=ADMIN_H)).json()["data"]
    assert [t["eval_score"] for t in listed if t["version"] == "2"] == [0.95]
    r = await client.post("/admin/tunes/support/promote", json={"version": "2"}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["forced"] is False
    path.write_text(path.read_text().replace("pass_rate: 0.95", "pass_rate: 0.5"))
    r = await client.post("/admin/tunes/support/promote", json={"version": "1"}, headers=ADMIN_H)
    assert r.status_code == 400
    r = await client.post(
        "/admin/tunes/support/promote", json={"version": "1", "force": True}, headers=ADMIN_H
    )
    assert r.status_code == 200 and r.json()["forced"] is True  # recorded
    path.write_text("name: [broken\n")
    r = await client.get("/admin/tunes", headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_manifest"


async def test_tune_system_prompt_is_used_when_the_request_has_none(client, engine, settings):
    path = settings.tunes_dir / "legal" / "tune.yaml"
    path.write_text(path.read_text() + "system_prompt: Answer formally.\n")
    app_catalogue_refresh = await client.post("/admin/tunes/legal/load", headers=ADMIN_H)
    assert app_catalogue_refresh.status_code == 200
    engine.script = ["ok"]
    await client.post(
        "/v1/chat/completions",
        headers=auth(),
        json={"model": "legal", "messages": [{"role": "user", "content": "hi"}]},
    )
    with_default = len(engine.requests[-1].prompt_token_ids)
    await client.post(
        "/v1/chat/completions",
        headers=auth(),
        json={
            "model": "legal",
            "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
        },
    )
    assert with_default == len(engine.requests[-1].prompt_token_ids) + 1  # "Answer formally."
