"""Two gateway replicas on real vLLM engines sharing a real redis-server, driven by the CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from gateway.auth import new_key
from tests.e2e.conftest import LiveGateway, gateway_process, write_setup
from tests.prom import samples, total

pytestmark = pytest.mark.e2e

METERED = """  - name: metered
    keys: [{id: metered-1, sha256: %s}]
    tunes: [support]
    default_tune: support
    limits: {requests_per_minute: 4}
  - name: spent
    keys: [{id: spent-1, sha256: %s}]
    tunes: [support]
    default_tune: support
    limits: {requests_per_minute: 4}
"""


@pytest.fixture(scope="module")
def replicas(demo_build, redis_server, tmp_path_factory) -> Iterator[tuple[LiveGateway, ...]]:
    from gateway.auth import hash_key

    root = tmp_path_factory.mktemp("replicas")
    keys = {"acme": new_key(), "narrow": new_key(), "metered": new_key(), "spent": new_key()}
    tunes, policies = write_setup(
        root,
        keys,
        METERED % (hash_key(keys["metered"]), hash_key(keys["spent"])),
        default="default:\n  limits: {requests_per_minute: 1000}\n",
    )
    admin = new_key()
    env = {
        "TUNEGATE_REDIS_URL": redis_server.url,
        "TUNEGATE_REDIS_PREFIX": "rep:",
        "TUNEGATE_VERSION_CHECK_S": "0.5",
    }
    with ExitStack() as stack:
        a = stack.enter_context(gateway_process(root, tunes, policies, keys, admin, env, "a"))
        b = stack.enter_context(gateway_process(root, tunes, policies, keys, admin, env, "b"))
        yield a, b


def chat(gw: LiveGateway, key: str, model: str = "default") -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": model,
            "max_tokens": 4,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Hello"}],
        },
    )


def wait_until(check, timeout: float = 1.0) -> float:
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.02)


def test_key_created_on_one_replica_works_on_the_other(replicas):
    a, b = replicas
    r = a.cli("keys", "create", "acme", "--id", "ci-key")
    assert r.returncode == 0, r.stderr
    key = next(line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("key:"))
    assert chat(b, key).status_code == 200
    listed = b.cli("keys", "list", "acme")
    assert listed.returncode == 0 and "ci-key" in listed.stdout and key not in listed.stdout
    r = b.cli("keys", "revoke", "acme", "ci-key")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: chat(a, key).status_code == 401)


def test_binding_reaches_every_replica_within_a_second(replicas):
    a, b = replicas
    key = a.keys["acme"]
    assert chat(b, key).json()["model"] == "support"  # cached on b before the switch
    r = a.cli("tenants", "bind", "acme", "legal")
    assert r.returncode == 0, r.stderr
    assert "support -> legal" in r.stdout
    elapsed = wait_until(lambda: chat(b, key).json()["model"] == "legal", timeout=1.0)
    assert elapsed < 1.0
    shown = b.cli("tenants", "show", "acme")
    assert "legal" in shown.stdout and "support" in shown.stdout
    listed = a.cli("tenants", "list")
    assert listed.returncode == 0 and "acme" in listed.stdout and "metered" in listed.stdout
    bad = a.cli("tenants", "bind", "narrow", "support")
    assert bad.returncode != 0 and "may not use" in bad.stderr
    a.cli("tenants", "bind", "acme", "support")


def test_limits_hold_across_replicas(replicas):
    a, b = replicas
    key = a.keys["metered"]
    codes = [chat(gw, key).status_code for gw in (a, b, a, b, a, b)]
    assert codes == [200, 200, 200, 200, 429, 429]


def early_starts(gw: LiveGateway, outcome: str) -> float:
    scrape = samples(httpx.get(f"{gw.url}/metrics").text)
    return total(scrape, "tunegate_early_starts_total", outcome=outcome)


def test_requests_start_early_on_the_engine_once_redis_has_shown_room(replicas):
    a, _ = replicas
    before = early_starts(a, "admitted")
    answers = [chat(a, a.keys["acme"]) for _ in range(3)]  # acme: 1000 a minute
    assert [r.status_code for r in answers] == [200] * 3
    assert all(r.json()["choices"][0]["message"]["content"] for r in answers)
    assert early_starts(a, "admitted") >= before + 2  # all but perhaps the first


def test_a_wrong_early_start_is_refused_and_its_engine_work_cancelled(replicas):
    a, b = replicas
    key = a.keys["spent"]
    assert chat(a, key).status_code == 200  # replica a sees 3 of 4 left: room to start early
    assert [chat(b, key).status_code for _ in range(3)] == [200] * 3  # b spends them
    refused = early_starts(a, "refused")
    r = chat(a, key)  # a starts it on its engine while Redis refuses it
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "requests_rate_limit_exceeded"
    assert early_starts(a, "refused") == refused + 1
    assert chat(a, a.keys["acme"]).status_code == 200  # the engine goes on


def test_redis_killed_and_restarted(replicas, redis_server):
    a, b = replicas
    fresh = a.cli("keys", "create", "narrow")
    fresh_key = fresh.stdout.split("key: ")[1].split()[0]
    assert chat(a, a.keys["acme"]).status_code == 200
    redis_server.stop()
    try:
        # Rate limiting fails closed (the default): 503 with Retry-After, never a 500 or a 200.
        r = chat(a, a.keys["acme"])
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert r.json()["error"]["code"] == "rate_limiter_unavailable"
        # A key this replica has never seen cannot be checked: fail closed.
        r = chat(b, fresh_key)
        assert r.status_code == 503 and r.json()["error"]["code"] == "state_unavailable"
        assert httpx.get(f"{a.url}/healthz").status_code == 200
        metrics = httpx.get(f"{a.url}/metrics").text
        assert (
            'tunegate_store_fallbacks_total{decision="fail_closed",operation="rate_limit"}'
            in metrics
        )
    finally:
        redis_server.start()  # same port, empty: a restart that lost everything
    # Nothing locks a tenant out: the policy file's keys come back, counters start afresh.
    wait_until(lambda: chat(a, a.keys["acme"]).status_code == 200, timeout=5)
    wait_until(lambda: chat(b, b.keys["metered"]).status_code == 200, timeout=5)
