"""The life of a tune on the real engine, from the CLI alone, while traffic keeps flowing: a
second version is built from demonstrations, evaluated, put on a 30% canary (sticky per user),
promoted, and rolled back."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.auth import new_key
from tests.e2e.conftest import BUILD, ROOT, gateway_process, write_setup

pytestmark = pytest.mark.e2e


CASES = [
    {
        "messages": [{"role": "user", "content": "Can I cancel my contract early?"}],
        "checks": [
            {"type": "contains", "value": "not legal advice"},
            {"type": "regex", "value": "^This is"},
            {"type": "max_length", "value": 400},
        ],
    },
    {
        "messages": [{"role": "user", "content": "How do I make pancakes?"}],
        "checks": [{"type": "contains", "value": "legal advice"}],
    },
    {
        "messages": [{"role": "user", "content": "Explain quantum chromodynamics."}],
        "checks": [{"type": "refusal"}],
    },
    {
        "messages": [{"role": "user", "content": "Where is my package?"}],
        "checks": [
            {"type": "json_schema", "value": {"type": "string"}},
            {"type": "contains", "value": "This is not legal advice."},
        ],
    },
]


def build_spec(tmp_path, tunes) -> str:
    """Version 2 of `support`, trained on a few legal demonstrations (a visibly different style)."""
    lines = (ROOT / "tunes/demo/data/legal.jsonl").read_text().splitlines()[:150]
    (tmp_path / "demos.jsonl").write_text("\n".join(lines) + "\n")
    spec = tmp_path / "support-2.yaml"
    spec.write_text(
        "name: support\nversion: '2'\ndata: demos.jsonl\nheld_out: 0.1\n"
        f"base_path: {BUILD}/base\ntunes_dir: {tunes}\ntrain: {{steps: 200, seed: 4}}\n"
    )
    return str(spec)


def which(client: httpx.Client, gw, user: str) -> str:
    r = client.post(
        f"{gw.url}/v1/chat/completions",
        headers=gw.headers(),
        json={
            "model": "support",
            "user": user,
            "max_tokens": 4,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Hello"}],
        },
    )
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["message"]["content"]
    return "2" if text.startswith("This is not") else "1"


def test_canary_promote_rollback_under_traffic(demo_build, tmp_path):
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(tmp_path, keys)
    support = tunes / "support" / "tune.yaml"
    support.write_text(support.read_text().replace("eval_threshold: 0.75", "eval_threshold: 0.6"))
    with gateway_process(tmp_path, tunes, policies, keys, new_key(), name="rollout") as gw:
        failures: list[int] = []
        stop = threading.Event()

        def traffic() -> None:  # concurrent requests running through every switch
            with httpx.Client(timeout=60) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    r = c.post(
                        f"{gw.url}/v1/chat/completions",
                        headers=gw.headers(),
                        json={
                            "model": "support",
                            "user": f"bg-{n}",
                            "max_tokens": 8,
                            "stream": n % 2 == 0,
                            "messages": [{"role": "user", "content": "Where is my package?"}],
                        },
                    )
                    r.read()
                    if r.status_code != 200:
                        failures.append(r.status_code)

        # Build version 2 from demonstrations with the CLI (the gateway keeps serving).
        r = gw.cli("tunes", "build", build_spec(tmp_path, tunes), timeout=600)
        assert r.returncode == 0, r.stderr
        assert "built version 2 (draft)" in r.stdout
        background = [threading.Thread(target=traffic) for _ in range(2)]
        for t in background:
            t.start()
        try:
            users = [f"user-{i}" for i in range(200)]
            with httpx.Client(timeout=60) as c:
                assert {which(c, gw, u) for u in users[:10]} == {"1"}
                r = gw.cli("tunes", "canary", "support", "2", "--weight", "30")
                assert r.returncode == 0, r.stderr
                assert "canary 2 at 30%" in r.stdout
                with ThreadPoolExecutor(4) as pool:
                    first = dict(
                        zip(users, pool.map(lambda u: which(c, gw, u), users), strict=True)
                    )
                share = Counter(first.values())["2"] / len(users)
                assert 0.2 <= share <= 0.4, share
                assert all(which(c, gw, u) == first[u] for u in users[:40])  # sticky
                listed = gw.cli("tunes", "list")
                assert listed.returncode == 0 and "canary" in listed.stdout
                # Promotion needs an evaluation at or above the manifest's threshold.
                r = gw.cli("tunes", "promote", "support", "2")
                assert r.returncode == 1 and "threshold" in r.stderr
                cases = tmp_path / "cases.jsonl"
                cases.write_text("\n".join(json.dumps(c) for c in CASES) + "\n")
                key = ["--api-key", gw.keys["acme"]]
                r = gw.cli("tunes", "eval", "support@2", str(cases), *key)
                assert r.returncode == 0, r.stderr
                report = json.loads(r.stdout.strip().splitlines()[-1])
                assert report["pass_rate"] >= 0.6 and set(report["by_check"]) == {
                    "contains",
                    "regex",
                    "json_schema",
                    "refusal",
                    "max_length",
                }
                assert "p50" in report["latency_ms"]
                listed = gw.cli("tunes", "list")
                assert str(report["pass_rate"]) in listed.stdout
                r = gw.cli("tunes", "promote", "support", "2")
                assert r.returncode == 0 and "live 2" in r.stdout
                assert {which(c, gw, u) for u in users[:20]} == {"2"}
                r = gw.cli("tunes", "rollback", "support")
                assert r.returncode == 0 and "live 1" in r.stdout
                assert {which(c, gw, u) for u in users[:20]} == {"1"}
                bad = gw.cli("tunes", "promote", "support", "9")
                assert bad.returncode == 1 and "no version" in bad.stderr
        finally:
            stop.set()
            for t in background:
                t.join()
        assert failures == []
