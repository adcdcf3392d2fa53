"""`loadtests/stage_costs.py`: savings are taken within each round, against the full pipeline."""

from __future__ import annotations

from loadtests.stage_costs import table, variants


def test_savings_are_taken_within_each_round() -> None:
    # The machine's speed moves between rounds and every variant with it. Within each round
    # tracing saves 200, 300 and 100 µs (median 200); the median of the full pipeline's rounds
    # minus the median of the variant's (1200 - 1100) would read 100 instead.
    rounds = [
        {"full": 1000.0, "no tracing": 800.0},
        {"full": 1500.0, "no tracing": 1200.0},
        {"full": 1200.0, "no tracing": 1100.0},
    ]
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in table(["full", "no tracing"], rounds).splitlines()
    }
    assert rows["full"] == "| full | 1200 | | |"
    assert rows["no tracing"] == "| no tracing | 1100 | 200 | 17% |"


def test_every_variant_has_a_gateway_and_the_full_pipeline_comes_first() -> None:
    chosen = variants()
    assert chosen[0].gateway == "full" and chosen[0].name.startswith("nothing")
    assert len({v.name for v in chosen}) == len(chosen)
    assert {v.gateway for v in chosen} == {
        "full",
        "no-tracing",
        "memory",
        "tmpfs-audit",
        "all-off",
        "bare",
    }
