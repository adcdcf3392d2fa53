"""Locust scenarios: a noisy tenant at ten times its limit does not hurt the others.

`loadtests/run_locust.py --quick` starts a mock vLLM upstream, a real `redis-server` and the
gateway in pool mode on loopback, runs `loadtests/locustfile.py` headless twice (the quiet
tenants alone, then with the noisy tenant), and exits 0 only when every threshold holds. The
threshold logic itself is checked here on synthetic stats, so a regression cannot pass unseen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtests import run_locust as rl

ROOT = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT_S = 170  # two 15 s runs and the start-up; a second pair when only a p95 misses


def quiet_run(
    p95_ms: float = 150.0, n: int = 100, failures: int = 0, status_429: int = 0
) -> dict[str, Any]:
    """Rows, statuses and samples for both quiet tenants: `n` requests each, latencies rising
    evenly to `p95_ms` at the 95th percentile."""
    rows: dict[str, rl.Row] = {}
    statuses: dict[str, dict[str, int]] = {}
    samples: dict[str, list[tuple[float, float]]] = {}
    fails: dict[str, int] = {}
    for tenant in rl.QUIET:
        name = f"{tenant} chat"
        lat = [p95_ms * (i + 1) / (0.95 * n) for i in range(n)]
        rows[name] = rl.Row(n, failures, 100.0, p95_ms, 5.0)
        statuses[name] = {"200": n - failures}  # failures: `status_429` 429s, the rest 500s
        if status_429:
            statuses[name]["429"] = status_429
        if failures > status_429:
            statuses[name]["500"] = failures - status_429
        samples[name] = [(5.0 + i * 0.1, v) for i, v in enumerate(lat)]
        fails[name] = failures
    return {"rows": rows, "statuses": statuses, "samples": samples, "failures": fails}


def stats(
    *,
    p95_ms: float = 150.0,
    quiet_failures: int = 0,
    quiet_429: int = 0,
    noisy: dict[str, int] | None = None,
    noisy_failures: int = 0,
    span_s: float = 60.0,
) -> rl.RunStats:
    parts = quiet_run(p95_ms, failures=quiet_failures, status_429=quiet_429)
    run = rl.RunStats(**parts)
    if noisy is not None:
        total = sum(noisy.values())
        run.rows["noisy chat"] = rl.Row(total, noisy_failures, 10.0, 140.0, 10.0)
        run.statuses["noisy chat"] = dict(noisy)
        run.failures["noisy chat"] = noisy_failures  # type: ignore[index]
        run.noisy_first_sent = 1000.0
        run.noisy_span_s = span_s
        run.noisy_level0 = 0.5
    return run


# 600 sent in 60 s at a limit of 60/min from an empty bucket: about 60 admitted, 540 refused
GOOD_NOISY = {"200": 61, "429": 540}


def failed(checks: list[rl.Check]) -> list[str]:
    return [c.name for c in checks if not c.ok]


def test_thresholds_hold_on_a_well_isolated_run() -> None:
    checks = rl.evaluate(stats(p95_ms=150), stats(p95_ms=170, noisy=GOOD_NOISY))
    assert failed(checks) == []
    assert not rl.repeatable(checks)


def test_noisy_5xx_fails() -> None:
    noisy = {"200": 61, "429": 538, "503": 2}
    checks = rl.evaluate(stats(), stats(noisy=noisy, noisy_failures=2))
    assert failed(checks) == ["noisy: no 5xx, nothing but 200s and 429s"]
    assert not rl.repeatable(checks)  # a 5xx is never repeated away


def test_noisy_not_limited_fails() -> None:
    checks = rl.evaluate(stats(), stats(noisy={"200": 601}))
    assert failed(checks) == ["noisy: 429s beyond its limit"]


def test_noisy_limited_too_hard_fails() -> None:
    checks = rl.evaluate(stats(), stats(noisy={"200": 20, "429": 581}))
    assert failed(checks) == ["noisy: 429s beyond its limit"]


def test_noisy_that_did_not_send_ten_times_its_limit_fails() -> None:
    checks = rl.evaluate(stats(), stats(noisy={"200": 61, "429": 140}))
    assert "noisy sends ≥ 8x its limit" in failed(checks)


def test_quiet_p95_growth_fails() -> None:
    # 150 -> 240 ms: more than both 1.5x (225) and +50 ms (200)
    checks = rl.evaluate(stats(p95_ms=150), stats(p95_ms=240, noisy=GOOD_NOISY))
    assert failed(checks) == [f"{t} p95 with the noisy tenant" for t in rl.QUIET]
    assert rl.repeatable(checks)  # a p95 alone may be measured once more (the noisy run first)
    both = rl.evaluate(stats(p95_ms=150), stats(p95_ms=240, quiet_failures=5, noisy=GOOD_NOISY))
    assert not rl.repeatable(both)


def test_small_p95_growth_within_the_absolute_slack_passes() -> None:
    # 60 -> 105 ms is 1.75x but only +45 ms: the absolute slack covers a short baseline
    checks = rl.evaluate(stats(p95_ms=60), stats(p95_ms=105, noisy=GOOD_NOISY))
    assert failed(checks) == []


def test_quiet_errors_and_429s_fail() -> None:
    checks = rl.evaluate(stats(), stats(quiet_failures=2, quiet_429=2, noisy=GOOD_NOISY))
    names = failed(checks)
    for tenant in rl.QUIET:
        assert f"{tenant} error rate, with the noisy tenant" in names
        assert f"{tenant} 429s (both runs)" in names


def test_warm_up_is_left_out_of_the_p95() -> None:
    run = stats(p95_ms=150)
    for name in run.samples:
        run.samples[name] += [(0.5, 5000.0)] * 20  # a stall in the first second
    assert rl.tenant_totals(run, "quiet-a", warmup_s=2.0)[2] == pytest.approx(150, abs=2)
    assert rl.tenant_totals(run, "quiet-a", warmup_s=0.0)[2] == 5000.0


def test_expected_admitted_is_a_token_bucket() -> None:
    assert rl.expected_admitted(600, 60.0, 60) == 120  # full bucket + a minute's refill
    assert rl.expected_admitted(600, 60.0, 60, level0=0.0) == 60
    assert rl.expected_admitted(10, 60.0, 60) == 10  # never more than was sent


@pytest.mark.timeout(QUICK_TIMEOUT_S + 20)
def test_quick_run_meets_every_threshold(tmp_path: Path) -> None:
    cmd = [sys.executable, "loadtests/run_locust.py", "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S, check=False
    )
    out = proc.stdout
    print(out)  # the table, shown with -s or on a failure
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr[-3000:]}"
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for name in (
        "quiet-a error rate, alone",
        "quiet-a error rate, with the noisy tenant",
        "quiet-a 429s (both runs)",
        "quiet-a p95 with the noisy tenant",
        "quiet-b error rate, alone",
        "quiet-b error rate, with the noisy tenant",
        "quiet-b 429s (both runs)",
        "quiet-b p95 with the noisy tenant",
        "noisy sends ≥ 8x its limit",
        "noisy: no 5xx, nothing but 200s and 429s",
        "noisy: 429s beyond its limit",
    ):
        row = [line for line in rows if line.startswith(f"| {name} |")]
        assert len(row) == 1 and row[0].endswith("| PASS |"), (name, out)
    assert "All thresholds hold." in out
    assert (tmp_path / "noisy_stats.csv").is_file()
    assert (tmp_path / "baseline_stats.csv").is_file()
