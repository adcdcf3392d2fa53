"""Every gateway metric, defined once, on a registry owned by the app (bounded labels only).

Labels come only from bounded sets: route, tenant (from the policy), tune and version (from the
catalogue), status class, rule id, reason and stage names fixed in code. Never a key, a request id
or a model name as the client sent it.

Several worker processes: when `PROMETHEUS_MULTIPROC_DIR` is set before `prometheus_client` is
imported (`tunegate serve --workers N` does this), every process writes its values to that folder
and `/metrics` adds them up across processes (`MultiProcessCollector`); gauges say how.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["Metrics", "exported_metric_names", "multiprocess_dir"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10)
GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series: half the output, nothing lost
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.registry = r = CollectorRegistry(auto_describe=True)

        # Traffic.
        self.requests = Counter(
            "tunegate_requests",
            "Requests answered, by route, tenant, tune, tune version and status class.",
            ["route", "tenant", "tune", "version", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tunegate_request_duration_seconds",
            "Time from request to last byte.",
            ["route", "tenant", "tune"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tunegate_time_to_first_token_seconds",
            "Time from request to the first generated text.",
            ["tenant", "tune"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_gap = Histogram(
            "tunegate_time_between_tokens_seconds",
            "Gap between consecutive streamed outputs of one answer.",
            ["tune"],
            buckets=GAP_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tunegate_tokens",
            "Prompt and completion tokens, by tenant, tune and kind (prompt or completion).",
            ["tenant", "tune", "kind"],
            registry=r,
        )
        self.stage_duration = Histogram(
            "tunegate_stage_duration_seconds",
            "Time spent per pipeline stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )

        # Policy.
        self.policy_denials = Counter(
            "tunegate_policy_denials",
            "Requests refused by a tenant policy rule, by reason.",
            ["tenant", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tunegate_rate_limited",
            "Requests refused by a limit, by reason (requests, tokens, concurrency).",
            ["tenant", "reason"],
            registry=r,
        )
        self.early_starts = Counter(
            "tunegate_early_starts",
            "Requests started on the engine before their admission was in, by outcome "
            "(admitted; refused: the engine work was cancelled).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("admitted", "refused"):
            self.early_starts.labels(outcome)
        self.store_fallbacks = Counter(
            "tunegate_store_fallbacks",
            "Decisions taken because the shared store did not answer.",
            ["operation", "decision"],
            registry=r,
        )
        self.tune_switches = Counter(
            "tunegate_tune_switches",
            "Tenant tune bindings changed at runtime.",
            ["tenant"],
            registry=r,
        )
        self.safety_findings = Counter(
            "tunegate_safety_findings",
            "Safety rule matches on input and output, by rule and action.",
            ["rule", "action"],
            registry=r,
        )

        # Tunes and the engine.
        self.rollouts = Counter(
            "tunegate_tune_rollouts",
            "Tune promotions, canary changes and rollbacks.",
            ["tune", "action"],
            registry=r,
        )
        self.adapter_loads = Counter(
            "tunegate_adapter_loads",
            "Adapter loads by tune, version and result (ok, error).",
            ["tune", "version", "result"],
            registry=r,
        )
        self.adapter_load_duration = Histogram(
            "tunegate_adapter_load_duration_seconds",
            "Time to load an adapter onto the engine.",
            ["tune", "version"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.adapter_evictions = Counter(
            "tunegate_adapter_evictions",
            "Adapters taken off the engine, by tune, version and reason (lru, unload).",
            ["tune", "version", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tunegate_requests_in_flight",
            "Completion requests inside the gateway now, from the door to the last byte.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.adapters_resident = Gauge(
            "tunegate_adapters_resident",
            "Adapters loaded on the engine now.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.engine_ready = Gauge(
            "tunegate_engine_ready",
            "1 when the engine serves requests.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.engine_running = Gauge(
            "tunegate_engine_requests_running",
            "Requests the engine is generating for now (from the engine's scheduler).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.engine_waiting = Gauge(
            "tunegate_engine_requests_waiting",
            "Requests queued in the engine's scheduler now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.engine_kv_usage = Gauge(
            "tunegate_engine_kv_cache_usage_ratio",
            "Fraction of the engine's KV cache in use (0 to 1).",
            registry=r,
            multiprocess_mode="livemax",
        )

        # The engine pool (remote vLLM servers).
        self.pool_routes = Counter(
            "tunegate_pool_routes",
            "Requests routed to an engine server, by server and affinity (hit: it held the "
            "tune; load: the tune was loaded there first; base: no tune).",
            ["server", "affinity"],
            registry=r,
        )
        self.pool_retries = Counter(
            "tunegate_pool_retries",
            "Requests retried on another engine server before their first byte, by reason.",
            ["reason"],
            registry=r,
        )
        self.pool_server_healthy = Gauge(
            "tunegate_pool_server_healthy",
            "1 when an engine server passes its health checks.",
            ["server"],
            registry=r,
            multiprocess_mode="livemax",
        )

        # Audit.
        self.audit_events = Counter(
            "tunegate_audit_events",
            "Audit writer events: committed batches, write errors, "
            "records spooled (the fallback), requests refused (fail_closed).",
            ["event"],
            registry=r,
        )
        self.audit_write_duration = Histogram(
            "tunegate_audit_write_duration_seconds",
            "Time to commit one batch of audit records to the sink.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.audit_queue_depth = Gauge(
            "tunegate_audit_queue_depth",
            "Audit records waiting for the writer.",
            registry=r,
            multiprocess_mode="livesum",
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: `labels()` finds the child under the metric's lock
        on every call (about 2.4 µs) and a request writes six to eight series. Label values
        come from the bounded sets above, so this cache is bounded the same way."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry)


def exported_metric_names() -> set[str]:
    """Every series name `/metrics` can show (with `_total`, `_bucket`, `_sum`, `_count`)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names
