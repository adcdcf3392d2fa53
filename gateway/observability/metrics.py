"""Every gateway metric, defined once, on a registry owned by the app (bounded labels only)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tunegate_requests",
            "Requests answered, by route, tenant, tune, tune version and status class.",
            ["route", "tenant", "tune", "version", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tunegate_request_duration_seconds",
            "Time from request to last byte.",
            ["route", "tune"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tunegate_time_to_first_token_seconds",
            "Time to the first generated text.",
            ["tune"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tunegate_tokens",
            "Prompt and completion tokens, by tenant and tune.",
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
        self.engine_ready = Gauge(
            "tunegate_engine_ready",
            "1 when the engine serves requests.",
            registry=r,
        )
        self.adapter_loads = Counter(
            "tunegate_adapter_loads",
            "Adapter loads by tune and result.",
            ["tune", "result"],
            registry=r,
        )

        self.policy_denials = Counter(
            "tunegate_policy_denials",
            "Requests refused by a tenant policy rule, by reason.",
            ["tenant", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tunegate_rate_limited",
            "Requests refused by a limit (requests, tokens, concurrency).",
            ["tenant", "reason"],
            registry=r,
        )
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
            "Safety rule matches on input and output, by action.",
            ["rule", "action"],
            registry=r,
        )
        self.rollouts = Counter(
            "tunegate_tune_rollouts",
            "Tune promotions, canary changes and rollbacks.",
            ["tune", "action"],
            registry=r,
        )
        self.audit_events = Counter(
            "tunegate_audit_events",
            "Audit writer events: committed batches, write errors, "
            "records spooled, requests refused (fail_closed).",
            ["event"],
            registry=r,
        )
        self.audit_queue_depth = Gauge(
            "tunegate_audit_queue_depth",
            "Audit records waiting for the writer.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
