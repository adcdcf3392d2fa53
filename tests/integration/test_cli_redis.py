"""The operator CLI straight against a real Redis (`--redis`), no gateway running."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from gateway.auth import hash_key
from gateway.store.redis_store import RedisStore

ROOT = Path(__file__).resolve().parents[2]


def cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNEGATE_REDIS_PREFIX": prefix}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--redis", redis_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bind_and_keys_through_redis(redis_server):
    prefix = f"cli{uuid.uuid4().hex[:6]}:"
    r = cli(redis_server.url, prefix, "tenants", "bind", "demo", "legal")
    assert r.returncode == 0, r.stderr
    assert "support -> legal" in r.stdout
    store = RedisStore(redis_server.url, prefix=prefix)
    assert asyncio.run(store.get_binding("demo")) == "legal"
    listed = cli(redis_server.url, prefix, "tenants", "list")
    assert listed.returncode == 0 and "demo" in listed.stdout and "legal" in listed.stdout
    created = cli(redis_server.url, prefix, "keys", "create", "demo", "--id", "ops")
    assert created.returncode == 0, created.stderr
    key = created.stdout.split("key: ")[1].split()[0]
    record = asyncio.run(RedisStore(redis_server.url, prefix=prefix).get_key(hash_key(key)))
    assert record is not None and record.key_id == "ops" and not record.revoked
    assert cli(redis_server.url, prefix, "keys", "revoke", "demo", "ops").returncode == 0
    record = asyncio.run(RedisStore(redis_server.url, prefix=prefix).get_key(hash_key(key)))
    assert record is not None and record.revoked
    bad = cli(redis_server.url, prefix, "tenants", "bind", "demo", "nope")
    assert bad.returncode == 1 and "may not use" in bad.stderr
    ghost = cli(redis_server.url, prefix, "tenants", "show", "ghost")
    assert ghost.returncode == 1 and "No tenant" in ghost.stderr


def test_cli_reports_unreachable_redis_and_gateway():
    r = cli("redis://127.0.0.1:1/0", "x:", "tenants", "list")
    assert r.returncode == 1 and "cannot reach Redis" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "tenants",
            "list",
            "--url",
            "http://127.0.0.1:1",
            "--admin-token",
            "t",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "cannot reach the gateway" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "tenants", "list"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "TUNEGATE_ADMIN_TOKEN"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "no admin token" in r.stderr
