"""The lean request span hands the span processors what the SDK's own span would: the same
name, kind, parent, attributes (limits applied), status and events, under the provider's
sampler; children made by the SDK hang under it."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from gateway.observability.otlp_encode import encode_spans
from gateway.observability.request_span import RequestSpan, RequestSpans
from gateway.observability.tracing import Tracing

PARENT = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)
START = {"http.request.method": "POST", "url.path": "/v1/chat/completions"}


def provider(**kw: object) -> tuple[TracerProvider, InMemorySpanExporter]:
    p = TracerProvider(resource=Resource({"service.name": "gw"}), **kw)  # type: ignore[arg-type]
    memory = InMemorySpanExporter()
    p.add_span_processor(SimpleSpanProcessor(memory))
    return p, memory


def life(span: trace.Span) -> None:
    """What the gateway does to a request span, and what it must not get away with."""
    span.update_name("chat support")
    span.set_attributes(
        {
            "gen_ai.request.max_tokens": 16,
            "gen_ai.request.temperature": 0.5,
            "tunegate.stream": False,
        }
    )
    span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
    span.set_attribute("dropped", None)
    span.add_event("first_token", {"ms": 1.5})
    span.set_status(Status(StatusCode.ERROR))
    span.end()
    span.set_attribute("after_end", 1)
    span.update_name("renamed after the end")
    span.end()


def both(p: TracerProvider, memory: InMemorySpanExporter, parent: trace.Span | None = None):
    ctx = (
        trace.set_span_in_context(parent)
        if parent
        else trace.set_span_in_context(NonRecordingSpan(PARENT))
    )
    sdk = p.get_tracer("tunegate").start_span(
        "POST /v1/chat/completions", context=ctx, kind=SpanKind.SERVER, attributes=dict(START)
    )
    life(sdk)
    lean = RequestSpans(p).start("POST /v1/chat/completions", ctx, dict(START))
    assert isinstance(lean, RequestSpan)
    life(lean)
    assert not lean.is_recording()
    theirs, ours = memory.get_finished_spans()
    return theirs, ours


def fields(s: ReadableSpan) -> dict[str, object]:
    return {
        "name": s.name,
        "kind": s.kind,
        "parent": s.parent,
        "trace_id": s.context.trace_id,
        "sampled": s.context.trace_flags.sampled,
        "remote": s.context.is_remote,
        "attributes": dict(s.attributes),
        "dropped_attributes": s.dropped_attributes,
        "status": (s.status.status_code, s.status.description),
        "events": [(e.name, dict(e.attributes)) for e in s.events],
        "resource": s.resource.attributes,
        "scope": s.instrumentation_scope.name,
    }


def test_the_processors_get_what_the_sdk_span_gives_them():
    theirs, ours = both(*provider())
    assert fields(ours) == fields(theirs)
    assert ours.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert ours.context.span_id != theirs.context.span_id
    assert ours.start_time <= ours.end_time
    # the OTLP encoder takes it as it takes the SDK's
    sent = ExportTraceServiceRequest.FromString(encode_spans([ours]).SerializePartialToString())
    assert sent.resource_spans[0].scope_spans[0].spans[0].name == "chat support"


def test_attribute_limits_apply_as_the_sdk_applies_them():
    limits = SpanLimits(max_span_attributes=3, max_span_attribute_length=4)
    theirs, ours = both(*provider(span_limits=limits))
    assert fields(ours) == fields(theirs)
    assert ours.dropped_attributes > 0
    assert all(len(v) <= 4 for v in ours.attributes.values() if isinstance(v, str))


def test_a_sampler_that_drops_the_request_leaves_no_span():
    p, memory = provider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    span = RequestSpans(p).start(
        "POST /v1/completions",
        trace.set_span_in_context(
            NonRecordingSpan(SpanContext(1, 2, is_remote=True))  # an unsampled parent
        ),
        dict(START),
    )
    assert not span.is_recording()
    assert not span.get_span_context().trace_flags.sampled
    span.set_attribute("x", 1)
    span.end()
    assert memory.get_finished_spans() == ()


class Tagging(Sampler):
    """Samples, and adds an attribute and trace state, as a custom sampler may."""

    def should_sample(
        self,
        parent_context,
        trace_id,
        name,
        kind=None,
        attributes=None,
        links=None,
        trace_state=None,
    ):  # type: ignore[no-untyped-def]
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, {"sampler.tag": "yes"}, TraceState([("tg", "1")])
        )

    def get_description(self) -> str:
        return "Tagging"


def test_the_samplers_attributes_and_trace_state_are_kept():
    theirs, ours = both(*provider(sampler=Tagging()))
    assert fields(ours) == fields(theirs)
    assert ours.attributes["sampler.tag"] == "yes"
    assert ours.context.trace_state == theirs.context.trace_state == TraceState([("tg", "1")])


def test_a_new_trace_without_a_parent():
    p, memory = provider(sampler=ALWAYS_ON)
    span = RequestSpans(p).start(
        "POST /v1/completions", trace.set_span_in_context(trace.INVALID_SPAN), dict(START)
    )
    span.end()
    (out,) = memory.get_finished_spans()
    assert out.parent is None and out.context.trace_id != 0


def test_sdk_children_hang_under_it_and_late_processors_get_it():
    p, memory = provider()
    spans = RequestSpans(p)  # made before the second processor is added
    late = InMemorySpanExporter()
    p.add_span_processor(SimpleSpanProcessor(late))
    root = spans.start(
        "POST /v1/chat/completions",
        trace.set_span_in_context(NonRecordingSpan(PARENT)),
        dict(START),
    )
    child = p.get_tracer("tunegate").start_span("generate", context=trace.set_span_in_context(root))
    child.end()
    root.end()
    got_child, got_root = memory.get_finished_spans()
    assert got_child.parent.span_id == got_root.context.span_id
    assert got_root.parent.span_id == PARENT.span_id
    assert [s.name for s in late.get_finished_spans()] == ["generate", "POST /v1/chat/completions"]


def test_an_exception_is_recorded_by_its_type_only():
    p, memory = provider()
    span = RequestSpans(p).start(
        "POST /v1/completions", trace.set_span_in_context(NonRecordingSpan(PARENT)), dict(START)
    )
    span.record_exception(ValueError("the key is sk-secret"))
    span.end()
    (out,) = memory.get_finished_spans()
    assert [(e.name, dict(e.attributes)) for e in out.events] == [
        ("exception", {"exception.type": "ValueError"})
    ]


@pytest.mark.parametrize("sdk_provider", [True, False])
def test_tracing_uses_it_for_the_sdks_provider_only(sdk_provider):
    p, _ = provider()
    tracing = Tracing(p if sdk_provider else trace.NoOpTracerProvider())
    span = tracing.start_request_span(
        "POST /v1/completions", trace.set_span_in_context(NonRecordingSpan(PARENT)), dict(START)
    )
    assert isinstance(span, RequestSpan) == sdk_provider
    span.end()
