"""`loadtests/bench_overhead.py`: the bare relay's added latency is printed beside the gateway's."""

from __future__ import annotations

from loadtests.bench_overhead import QUICK, report


def _results(with_bare: bool) -> dict[str, object]:
    row0 = {
        "direct": {"p50": 0.14, "p99": 0.24},
        "gateway": {"p50": 1.02, "p99": 2.14},
        "litellm": {"p50": 5.59, "p99": 6.23},
    }
    if with_bare:
        row0["bare"] = {"p50": 0.15, "p99": 0.31}
    row50 = {
        "direct": {"p50": 51.08, "p99": 51.56},
        "gateway": {"p50": 2.17, "p99": 3.18},
        "litellm": {"p50": 6.57, "p99": 7.56},
    }
    cpu = {"us": 650.0, "errors": 0.0, "redis": 50.0, "upstream": 80.0}
    return {
        "latency": {(0, 1): row0, (50, 1): row50},
        "peak": {"gateway": (2229.0, 64), "direct": (12582.0, 64), "litellm": (218.0, 4)},
        "streams": {},
        "cpu": {"gateway": cpu, "bare": {**cpu, "us": 110.0}, "litellm": {**cpu, "us": 4550.0}},
        "errors": [],
    }


def _lines(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_the_bare_relays_added_latency_sits_beside_direct_at_upstream_0_ms() -> None:
    text = report(_results(True), QUICK, True, None, [], 0.0)
    p50, p99 = _lines(text, "| added p50 ms, 1 conn, upstream 0 ms") + _lines(
        text, "| added p99 ms, 1 conn, upstream 0 ms"
    )
    assert "| +1.02 | 0.14; bare +0.15 | +5.59 |" in p50
    assert "0.18 gw/LiteLLM, 0.03 bare/LiteLLM" in p50
    assert "| +2.14 | 0.24; bare +0.31 | +6.23 |" in p99
    (target,) = _lines(text, "| added p50 at 1 conn ≤ 1/10 of LiteLLM's (upstream 0 ms)")
    assert "+1.02 vs +5.59 ms (a bare relay: +0.15)" in target
    # at upstream 50 ms the bare relay does not run: direct's figure alone
    (p50_50,) = _lines(text, "| added p50 ms, 1 conn, upstream 50 ms")
    assert "| +2.17 | 51.08 | +6.57 | 0.33 gw/LiteLLM |" in p50_50


def test_without_the_bare_relays_runs_the_rows_stay_as_they_were() -> None:
    text = report(_results(False), QUICK, True, None, [], 0.0)
    (p50,) = _lines(text, "| added p50 ms, 1 conn, upstream 0 ms (direct: its p50)")
    assert "| +1.02 | 0.14 | +5.59 | 0.18 gw/LiteLLM |" in p50
    assert "bare" not in p50
