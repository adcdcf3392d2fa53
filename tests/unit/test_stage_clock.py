"""Stage timing: one clock for the stage's metric and its duration on the request span."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.observability import tracing as tr
from gateway.observability.metrics import Metrics


def _stage_count(metrics: Metrics, stage: str) -> float:
    value = metrics.registry.get_sample_value(
        "tunegate_stage_duration_seconds_count", {"stage": stage}
    )
    return value or 0.0


def _stage_sum(metrics: Metrics, stage: str) -> float:
    value = metrics.registry.get_sample_value(
        "tunegate_stage_duration_seconds_sum", {"stage": stage}
    )
    return value or 0.0


def test_without_tracing_a_stage_is_observed_on_its_metric_only():
    metrics = Metrics()
    tracing = tr.Tracing()
    hist = metrics.child(metrics.stage_duration, "auth")
    for _ in range(3):
        with tracing.stage("auth", hist):
            time.sleep(0.002)
    assert _stage_count(metrics, "auth") == 3
    assert _stage_sum(metrics, "auth") >= 0.006
    with tracing.stage("auth"):  # no metric, no span: nothing to time
        pass
    assert _stage_count(metrics, "auth") == 3


@pytest.mark.parametrize("level", ["request", "attributes", "spans"])
def test_with_tracing_the_same_clock_feeds_the_metric_and_the_span(level):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = tr.Tracing(provider, stages=level)
    metrics = Metrics()
    span = tracing.tracer.start_span("request")
    stages: dict[str, float] = {}
    tokens = (tr._request_span.set(span), tr._stage_ms.set(stages))
    try:
        for name in ("auth", "auth", "audit"):
            with tracing.stage(name, metrics.child(metrics.stage_duration, name)):
                time.sleep(0.002)
        with (
            pytest.raises(KeyError),
            tracing.stage("admit", metrics.child(metrics.stage_duration, "admit")),
        ):
            raise KeyError("x")
    finally:
        tr._request_span.reset(tokens[0])
        tr._stage_ms.reset(tokens[1])
        span.end()
    assert [_stage_count(metrics, s) for s in ("auth", "audit", "admit")] == [2, 1, 1]
    children = {s.name: s for s in exporter.get_finished_spans() if s.name != "request"}
    if level == "request":  # every stage a summed duration, in milliseconds
        assert not children
        assert set(stages) == {"auth", "audit", "admit"}
        assert stages["auth"] == pytest.approx(_stage_sum(metrics, "auth") * 1000)
        assert stages["auth"] >= 4
    elif level == "attributes":  # the audit commit waits on a disk: a child span
        assert set(children) == {"audit"} and set(stages) == {"auth", "admit"}
    else:
        assert set(children) == {"auth", "audit", "admit"} and not stages
        assert children["admit"].status.description == "KeyError"


def test_metric_children_are_kept_and_are_the_libraries_own():
    metrics = Metrics()
    one = metrics.child(metrics.requests, "chat", "acme", "support", "1", "2xx")
    assert one is metrics.child(metrics.requests, "chat", "acme", "support", "1", "2xx")
    assert one is metrics.requests.labels("chat", "acme", "support", "1", "2xx")
    one.inc()
    other = metrics.child(metrics.requests, "chat", "acme", "support", "1", "4xx")
    assert other is not one
    sample = {"route": "chat", "tenant": "acme", "tune": "support", "version": "1"}
    get = metrics.registry.get_sample_value
    assert get("tunegate_requests_total", {**sample, "status": "2xx"}) == 1
    assert get("tunegate_requests_total", {**sample, "status": "4xx"}) == 0
