"""The request span, made without the SDK's per-attribute work: every API request has one.

The SDK's `Span` checks each attribute as it is set (`BoundedAttributes`, under a lock) and a
request span gets about 35 of them, all of types the gateway itself chooses. `RequestSpans`
makes the same span from the same provider parts (its sampler, id generator, resource, span
processors and attribute limits) but keeps the attributes in a plain dict until the span ends,
then hands the processors the SDK's own `ReadableSpan`: the batch processor, the OTLP exporter
and any other processor get what an SDK span would give them. Measured side by side in the
running gateway (two gateways, the measured one alone on a core, 6 interleaved rounds), it costs
55 µs less per request (931 against 877 µs of CPU).

What it leaves out, since nothing in the gateway uses it on the request span: processors'
`on_start` (the SDK's batch and simple processors do nothing there) and exceptions as events
(`record_exception` records only the exception's type, never its message). Child spans (the
`attributes` and `spans` levels) are the SDK's own, parented to this one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["RequestSpan", "RequestSpans"]

_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags.SAMPLED
_DEFAULT = TraceFlags.DEFAULT
_RANDOM = TraceFlags.RANDOM_TRACE_ID


class RequestSpans:
    """Starts request spans (kind SERVER) for an SDK `TracerProvider`."""

    def __init__(self, provider: TracerProvider, scope: str = "tunegate") -> None:
        self.provider = provider
        # Every processor added to the provider, before or after this is made, and the limits
        # its spans keep to (the SDK has no public accessor for either).
        self.processor = provider._active_span_processor
        self.limits: SpanLimits = getattr(provider, "_span_limits", None) or SpanLimits()
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.random_ids = self.ids.is_trace_id_random()
        self.scope = InstrumentationScope(scope)

    def start(self, name: str, parent: Context, attributes: dict[str, Any]) -> trace.Span:
        """A recording `RequestSpan`, or a non-recording span when the sampler drops it."""
        parent_ctx = trace.get_current_span(parent).get_span_context()
        parent_sc = parent_ctx if parent_ctx.is_valid else None
        trace_id = parent_sc.trace_id if parent_sc else self.ids.generate_trace_id()
        sampled = self.sampler.should_sample(parent, trace_id, name, SpanKind.SERVER, attributes)
        decision = sampled.decision
        flags = _SAMPLED if decision.is_sampled() else _DEFAULT
        random = parent_sc.trace_flags.random_trace_id if parent_sc else self.random_ids
        context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags | _RANDOM) if random else TraceFlags(flags),
            trace_state=sampled.trace_state,
        )
        if not decision.is_recording():
            return trace.NonRecordingSpan(context)
        # as in the SDK, the span starts with the attributes the sampler gives back
        return RequestSpan(self, name, context, parent_sc, sampled.attributes or {})


def _value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # as the SDK stores sequences


class RequestSpan(trace.Span):
    """One request's span until it ends; then an SDK `ReadableSpan` for the processors."""

    __slots__ = ("_attrs", "_context", "_ended", "_events", "_links", "_name", "_owner")
    __slots__ += ("_parent", "_start", "_status")

    def __init__(
        self,
        owner: RequestSpans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: Mapping[str, Any],
    ) -> None:
        self._owner = owner
        self._name = name
        self._context = context
        self._parent = parent
        self._attrs = {k: _value(v) for k, v in attributes.items()}  # the span's own copy
        self._start = time.time_ns()
        self._status = _UNSET
        self._events: list[Event] = []
        self._links: list[Link] = []
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attrs[key] = _value(value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._ended:
            for key, value in attributes.items():
                self._attrs[key] = _value(value)

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if not self._ended:
            self._status = status if isinstance(status, Status) else Status(status, description)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if not self._ended:
            self._events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if not self._ended and context.is_valid:
            self._links.append(Link(context, dict(attributes or {})))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        attrs = {"exception.type": type(exception).__name__, **(attributes or {})}
        self.add_event("exception", attrs, timestamp)  # never the message

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        owner, attrs = self._owner, self._attrs
        limits = owner.limits
        attributes: Any = attrs
        most = limits.max_span_attributes
        if limits.max_span_attribute_length is not None or (most is not None and len(attrs) > most):
            attributes = BoundedAttributes(
                most,
                attrs,
                immutable=True,
                max_value_len=limits.max_span_attribute_length,
            )
        owner.processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=owner.provider.resource,
                attributes=attributes,
                events=self._events,
                links=self._links,
                kind=SpanKind.SERVER,
                instrumentation_scope=owner.scope,
                status=self._status,
                start_time=self._start,
                end_time=end_time or time.time_ns(),
            )
        )
