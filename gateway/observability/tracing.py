"""OpenTelemetry traces: one server span per API request, its stages as attributes or spans.

Off by default. On when the standard variables ask for it: `OTEL_TRACES_EXPORTER=otlp` (or
`console`), or an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, unless
`OTEL_SDK_DISABLED=true`. Spans leave through a `BatchSpanProcessor` (its `OTEL_BSP_*` settings
apply), so exporting never runs on a request's path. A client's W3C `traceparent` becomes the
parent of the request span; `trace_headers()` gives the headers to pass on to a remote engine.

The request span's context lives in a context variable set by `TracingMiddleware`; stages read it
(`Tracing.stage`, `Tracing.record`) so the pipeline needs no extra arguments. When tracing is off
the middleware is a pass-through and stages cost one context-variable read.

Stages come in three levels of detail (`TUNEGATE_TRACE_STAGES`):
- `request` (the default): one span per request. Every stage is an attribute of the request
  span with its duration in milliseconds (`tunegate.stage_ms.<stage>`, summed when a stage runs
  more than once). The request span is made lean (`request_span.py`: 55 µs less per request
  than the SDK's span) and costs about 13 µs to encode for export (`otlp_encode.py`, the wire
  bytes written directly; 30 µs building the protobuf message, 150 µs with the SDK's encoder),
  which is more than the quick stages themselves take, and a busy gateway makes one per request.
- `attributes`: as `request`, but the stages that wait on something outside the gateway
  (adapter load, engine queue, generation, the audit commit) are child spans.
- `spans`: every stage is a child span.
A request span the sampler dropped (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, …) costs
its stages nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["StageClock", "Tracing", "TracingMiddleware", "current_span"]

_request_ctx: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "tunegate_trace_ctx", default=None
)
_request_span: contextvars.ContextVar[Span | None] = contextvars.ContextVar(
    "tunegate_trace_span", default=None
)
# The summed milliseconds of the stages that are not child spans, set on the request span in
# one call when it ends.
_stage_ms: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "tunegate_trace_stage_ms", default=None
)
# Stages that wait on something outside the gateway: child spans at the `attributes` level.
SPAN_STAGES = frozenset({"adapter_load", "engine_queue", "generate", "audit"})
LEVELS = ("request", "attributes", "spans")
STAGE_ATTR = "tunegate.stage_ms."
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACED_PREFIX = "/v1/"
_NOTHING = contextlib.nullcontext()


class StageClock:
    """Times one stage: its milliseconds are added to `stages` (the request's summed stage
    durations, when it has them) and, when given, its seconds observed on `hist` (the stage's
    metric). A plain class, not a generator: a request passes through about sixteen stages."""

    __slots__ = ("hist", "name", "stages", "start")

    def __init__(self, name: str, stages: dict[str, float] | None, hist: Any = None) -> None:
        self.name = name
        self.stages = stages
        self.hist = hist
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.start
        if self.hist is not None:
            self.hist.observe(seconds)
        if self.stages is not None:
            _add_ms(self.stages, self.name, seconds * 1000)


def _add_ms(stages: dict[str, float], name: str, ms: float) -> None:
    """Stage durations are summed per request; `TracingMiddleware` sets them on the request
    span as it ends."""
    stages[name] = stages.get(name, 0.0) + ms


def current_span() -> Span | None:
    return _request_span.get()


def _wanted_from_env() -> bool:
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter in ("otlp", "console")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Tracing:
    """The gateway's tracer; a no-op unless built with a provider (or from `OTEL_*`)."""

    def __init__(self, provider: Any = None, *, stages: str | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.tracer = provider.get_tracer("tunegate") if provider else trace.NoOpTracer()
        stages = (stages or os.environ.get("TUNEGATE_TRACE_STAGES") or "request").strip().lower()
        if stages not in LEVELS:
            raise ValueError(
                f"TUNEGATE_TRACE_STAGES must be request, attributes or spans, not {stages!r}"
            )
        self.all_spans = stages == "spans"
        # The stages that are child spans (all of them when `all_spans`).
        self.span_stages = SPAN_STAGES if stages == "attributes" else frozenset()
        self.request_spans: Any = None  # the request span's maker, for the SDK's provider
        if provider is not None:
            from opentelemetry.sdk.trace import TracerProvider

            from gateway.observability.request_span import RequestSpans

            if isinstance(provider, TracerProvider):
                self.request_spans = RequestSpans(provider)

    def start_request_span(self, name: str, parent: Context, attributes: dict[str, Any]) -> Span:
        """The request's span (kind SERVER), parented to the client's context."""
        if self.request_spans is not None:
            return self.request_spans.start(name, parent, attributes)
        return self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    @classmethod
    def from_env(cls) -> Tracing:
        if not _wanted_from_env():
            return cls()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", "tunegate")}
        )  # OTEL_RESOURCE_ATTRIBUTES are merged in by Resource.create
        provider = TracerProvider(resource=resource)
        exporter: Any
        if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            from gateway.observability.otlp_encode import install

            install()  # the same bytes, in about a third of the encoding time
            exporter = OTLPSpanExporter()  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()  # flushes what the batch processor still holds

    def _recording(self) -> Span | None:
        span = _request_span.get() if self.enabled else None
        return span if span is not None and span.is_recording() else None

    def stage(self, name: str, hist: Any = None) -> contextlib.AbstractContextManager[None]:
        """A stage of the current request: a child span, or its duration on the request span;
        with `hist` (the stage's metric) also its seconds observed there, on the same clock."""
        root = self._recording()
        if root is None:
            return _NOTHING if hist is None else StageClock(name, None, hist)
        if not self.all_spans and name not in self.span_stages:
            return StageClock(name, _stage_ms.get(), hist)
        return self._child_span(name, hist)

    @contextlib.contextmanager
    def _child_span(self, name: str, hist: Any) -> Iterator[None]:
        span = self.tracer.start_span(name, context=_request_ctx.get())
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            if hist is not None:
                hist.observe(time.perf_counter() - start)
            span.end()

    def record(self, name: str, start_ns: int, end_ns: int | None = None, **attrs: Any) -> None:
        """A finished stage with given times (for stages that straddle stream chunks)."""
        root = self._recording()
        if root is None:
            return
        if not self.all_spans and name not in self.span_stages:
            stages = _stage_ms.get()
            if stages is not None:
                _add_ms(stages, name, ((end_ns or time.time_ns()) - start_ns) / 1e6)
            return
        span = self.tracer.start_span(
            name, context=_request_ctx.get(), start_time=start_ns, attributes=attrs
        )
        span.end(end_time=end_ns or time.time_ns())

    def trace_headers(self) -> dict[str, str] | None:
        """`traceparent` (and `tracestate`) for the current request, for a remote engine."""
        ctx = _request_ctx.get() if self.enabled else None
        if ctx is None:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=ctx)
        return carrier or None


class TracingMiddleware:
    """Opens the request span for API routes, parented to the client's `traceparent`."""

    def __init__(self, app: Any, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            not self.tracing.enabled
            or scope["type"] != "http"
            or not scope["path"].startswith(_TRACED_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"traceparent", b"tracestate")
        }
        parent = _PROPAGATOR.extract(carrier)
        span = self.tracing.start_request_span(
            f"{scope['method']} {scope['path']}",
            parent,
            {
                "http.request.method": scope["method"],
                "url.path": scope["path"],
                "tunegate.request_id": scope.get("state", {}).get("request_id", ""),
            },
        )
        token = _request_ctx.set(trace.set_span_in_context(span, parent))
        span_token = _request_span.set(span)
        stages: dict[str, float] = {}
        stages_token = _stage_ms.set(stages)
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)  # never the message
            raise
        finally:
            _request_ctx.reset(token)
            _request_span.reset(span_token)
            _stage_ms.reset(stages_token)
            attrs: dict[str, Any] = {STAGE_ATTR + k: round(v, 3) for k, v in stages.items()}
            attrs["http.response.status_code"] = status
            span.set_attributes(attrs)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
