"""The engine benchmark's figures: time to first token counts text only, and each ratio is
taken round by round against vLLM's server."""

from __future__ import annotations

import json

import pytest

from loadtests.bench_engine import has_content, side


def event(delta: dict[str, str]) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta}]})


def test_the_role_chunk_is_not_a_first_token() -> None:
    assert not has_content(event({"role": "assistant", "content": ""}))
    assert not has_content(json.dumps({"choices": [], "usage": {"completion_tokens": 3}}))
    assert has_content(event({"content": "Hello"}))


def test_ratios_are_taken_within_each_round() -> None:
    # the machine ran twice as fast in the second round: both servers moved together
    gw = [{"rps": 4.0, "p50": 250.0, "ttft": 15.0}, {"rps": 8.0, "p50": 125.0, "ttft": 8.0}]
    vl = [{"rps": 4.4, "p50": 230.0, "ttft": 18.0}, {"rps": 8.8, "p50": 115.0, "ttft": 10.0}]
    pool = [{"rps": 3.6, "p50": 280.0, "ttft": 20.0}, {"rps": 7.2, "p50": 140.0, "ttft": 12.0}]
    r = side({"gw": gw, "vl": vl, "pool": pool})
    assert r["gw"] == pytest.approx(4.0 / 4.4)
    assert r["pool"] == pytest.approx(3.6 / 4.4)
    assert r["gw_ttft"] == pytest.approx((-3.0 - 2.0) / 2)
    assert r["pool_p50"] == pytest.approx((50.0 + 25.0) / 2)
    assert r["pool_ttft"] == pytest.approx(2.0)
