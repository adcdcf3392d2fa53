"""The engine benchmark's figures: time to first token counts text only, and each ratio is
taken round by round against vLLM's server."""

from __future__ import annotations

import json

import pytest

from loadtests.bench_engine import has_content, print_rows, side


def event(delta: dict[str, str]) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta}]})


def test_the_role_chunk_is_not_a_first_token() -> None:
    assert not has_content(event({"role": "assistant", "content": ""}))
    assert not has_content(json.dumps({"choices": [], "usage": {"completion_tokens": 3}}))
    assert has_content(event({"content": "Hello"}))


def test_ratios_are_taken_within_each_round() -> None:
    # The machine's speed drifts between rounds, and both servers move with it. Within each
    # round the gateway's ratio is 0.8, 1.33 and 1.0 (median 1.0); the median of its rounds over
    # the median of the server's rounds would read 4.0 / 5.0 = 0.8 instead.
    gw = [{"rps": 4.0, "p50": 250.0, "ttft": 15.0}, {"rps": 8.0, "p50": 125.0, "ttft": 8.0},
          {"rps": 3.0, "p50": 330.0, "ttft": 30.0}]  # fmt: skip
    vl = [{"rps": 5.0, "p50": 230.0, "ttft": 18.0}, {"rps": 6.0, "p50": 115.0, "ttft": 10.0},
          {"rps": 3.0, "p50": 300.0, "ttft": 20.0}]  # fmt: skip
    pool = [{"rps": 4.5, "p50": 280.0, "ttft": 20.0}, {"rps": 3.0, "p50": 140.0, "ttft": 12.0},
            {"rps": 2.4, "p50": 400.0, "ttft": 25.0}]  # fmt: skip
    r = side({"gw": gw, "vl": vl, "pool": pool})
    assert r["gw"] == pytest.approx(1.0)
    assert r["pool"] == pytest.approx(0.8)  # 0.9, 0.5, 0.8 (medians: 3.0 / 5.0 = 0.6)
    assert r["gw_ttft"] == pytest.approx(-2.0)  # -3, -2, +10 (medians: 15 - 18 = -3)
    assert r["pool_p50"] == pytest.approx(50.0)  # 50, 25, 100 (medians: 280 - 230)
    assert r["pool_ttft"] == pytest.approx(2.0)  # 2, 2, 5 (medians: 20 - 18)


def _row(label: str, conc: int, gw_ratio: float) -> tuple:
    fig = {"rps": 6.6, "ttft": 7.0, "p50": 150.0, "p99": 170.0, "n": 20.0}
    side_figs = {"gw": gw_ratio, "gw_ttft": -1.0, "pool": 1.0, "pool_p50": 2.0, "pool_ttft": 0.3}
    return (label, conc, fig, fig, fig, side_figs)


def test_the_target_line_shows_a_row_just_under_parity_as_such(capsys) -> None:
    print_rows([_row("single tune", 1, 0.996), _row("mix of tunes", 8, 1.052)])
    (target,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("TARGET ")]
    assert "| 0.996x to 1.052x | MISS" in target
    print_rows([_row("single tune", 1, 1.0), _row("mix of tunes", 8, 1.2)])
    (target,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("TARGET ")]
    assert target.endswith("| 1.000x to 1.200x | PASS")
