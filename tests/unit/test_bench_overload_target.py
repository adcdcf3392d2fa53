"""`loadtests/bench_overhead.py`: the overload target is judged against the ramp's saturation too."""

from __future__ import annotations

from loadtests.bench_overhead import overload_met

MET = {
    "peak": 1700.0,
    "saturation": 1800.0,
    "goodput": 1650.0,
    "reject_p99": 30.0,
    "rejected": 1500.0,
    "failed": 0.0,
}


def test_goodput_near_the_ramps_most_with_fast_refusals_meets_it() -> None:
    assert overload_met(MET)


def test_a_low_ramp_peak_does_not_pass_goodput_short_of_saturation() -> None:
    # The ramp's last step went just over the p99 line, so its peak is the step before: goodput
    # is 1.30x that peak but 0.83x what the gateway served at saturation.
    low_peak = {**MET, "peak": 1549.0, "saturation": 2420.0, "goodput": 2008.0}
    assert not overload_met(low_peak)


def test_slow_refusals_or_failures_miss_it() -> None:
    assert not overload_met({**MET, "reject_p99": 51.0})
    assert not overload_met({**MET, "failed": 3.0})
    assert overload_met({**MET, "reject_p99": 80.0, "rejected": 0.0})  # nothing was refused
