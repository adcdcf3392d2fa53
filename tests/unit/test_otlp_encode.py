"""The fast OTLP encoder gives the SDK encoder's message, byte for byte, for spans of every
shape the SDK can make (and for attribute values it only meets in hand-made spans)."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from gateway.observability.otlp_encode import encode_spans, install

REMOTE = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
)


def same(spans: list[ReadableSpan]) -> None:
    ours = encode_spans(spans).SerializeToString(deterministic=True)
    theirs = sdk_encode(spans).SerializeToString(deterministic=True)
    assert ours == theirs


def made_spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    out: list[ReadableSpan] = []
    for service, schema in (("gw", ""), ("other", "https://opentelemetry.io/schemas/1.21.0")):
        provider = TracerProvider(resource=Resource({"service.name": service}, schema))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        plain = provider.get_tracer("tunegate")
        versioned = provider.get_tracer("lib", "1.2", schema, attributes={"scope.attr": "x"})
        with plain.start_as_current_span(
            "chat support",
            context=trace.set_span_in_context(trace.NonRecordingSpan(REMOTE)),
            kind=SpanKind.SERVER,
            attributes={
                "s": "text",
                "b": True,
                "i": 16,
                "f": 0.25,
                "strs": ["length", "stop"],
                "ints": (1, 2, 3),
                "floats": [0.5],
                "bools": [False],
                "empty": "",
            },
            links=[Link(REMOTE, {"why": "retry"}), Link(REMOTE)],
        ) as root:
            root.add_event("first_token", {"ms": 1.5})
            root.add_event("bare")
            with versioned.start_as_current_span("stage", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "TimeoutError"))
            with plain.start_as_current_span("ok", kind=SpanKind.INTERNAL) as ok:
                ok.set_status(Status(StatusCode.OK))
        with plain.start_as_current_span("lonely", kind=SpanKind.PRODUCER):
            pass
        with plain.start_as_current_span("consumer", kind=SpanKind.CONSUMER):
            pass
        out.extend(memory.get_finished_spans())
        memory.clear()
    return out


def test_spans_the_sdk_makes_encode_the_same():
    spans = made_spans()
    assert len(spans) == 10
    same(spans)
    same(spans[::-1])  # the groups come in the order their first span does
    same(spans[:1])
    same([])


def test_a_long_batch_lets_other_threads_have_the_interpreter_lock(monkeypatch):
    """Every `YIELD_EVERY` spans the encoder sleeps, so the event loop is not held off for a
    whole batch; the bytes stay the SDK's."""
    from gateway.observability import otlp_encode

    slept: list[float] = []
    monkeypatch.setattr(otlp_encode.time, "sleep", slept.append)
    spans = made_spans() * 5  # 50 spans
    same(spans)
    assert slept == [otlp_encode.YIELD_S] * (len(spans) // otlp_encode.YIELD_EVERY)
    slept.clear()
    encode_spans(spans[: otlp_encode.YIELD_EVERY - 1])
    assert slept == []  # a short batch goes through without a pause


def test_values_only_hand_made_spans_carry_encode_the_same(caplog):
    span = ReadableSpan(
        "odd",
        context=SpanContext(1, 2, is_remote=False),
        parent=SpanContext(1, 3, is_remote=False),
        resource=Resource({"service.name": "gw", "bytes": b"\x00\x01"}),
        attributes={"none": None, "map": {"a": 1, "b": [1, "x"]}, "bad": object(), "after": 1},
        events=[Event("e", {"bad": object(), "kept": "y"}, timestamp=5)],
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
    )
    with caplog.at_level(logging.ERROR):
        same([span])
    assert "Failed to encode key bad" in caplog.text


def test_installed_behind_the_otlp_http_exporter():
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    before = trace_exporter.encode_spans
    trace_exporter.encode_spans = sdk_encode  # as imported, before any gateway set tracing up
    try:
        assert install() is True
        assert trace_exporter.encode_spans is encode_spans
        assert install() is False  # already replaced: nothing to stand in for
    finally:
        trace_exporter.encode_spans = before


def test_spans_reach_an_otlp_receiver_through_the_gateway_tracing(monkeypatch):
    """`Tracing.from_env` with an OTLP endpoint: a receiver on a loopback port gets the span,
    encoded by this module, and parses it with the protocol's own classes."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from opentelemetry.exporter.otlp.proto.http import trace_exporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from gateway.observability.tracing import Tracing

    bodies: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = trace_exporter.encode_spans
    try:
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        url = f"http://127.0.0.1:{server.server_port}/v1/traces"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
        tracing = Tracing.from_env()
        assert trace_exporter.encode_spans is encode_spans
        span = tracing.tracer.start_span(
            "chat support", attributes={"tunegate.stage_ms.admit": 0.5}
        )
        span.end()
        tracing.shutdown()  # flushes the batch processor
    finally:
        trace_exporter.encode_spans = before
        server.shutdown()
    (body,) = bodies
    request = ExportTraceServiceRequest.FromString(body)
    (got,) = request.resource_spans[0].scope_spans[0].spans
    assert got.name == "chat support"
    assert [(a.key, a.value.double_value) for a in got.attributes] == [
        ("tunegate.stage_ms.admit", 0.5)
    ]


def test_kept_attribute_bytes_never_stand_in_for_another_value(monkeypatch, caplog):
    """Attributes' bytes are kept for reuse: equal values of other types (1, True, 1.0), other
    keys, text past 127 bytes, non-ASCII text, negative and out-of-range integers, and a full
    store (cleared) still encode as the SDK does."""
    from gateway.observability import otlp_encode

    monkeypatch.setattr(otlp_encode, "KEPT_ATTRIBUTES", 5)
    otlp_encode._kept.clear()
    values = [1, True, 1.0, 0, False, 0.0, -1, -(2**63), 2**63 - 1, "", "é" * 200, "x" * 127]
    spans = []
    for i, value in enumerate(values * 2):
        spans.append(
            ReadableSpan(
                f"s{i}",
                context=SpanContext(i + 1, i + 2, is_remote=False),
                resource=Resource({"service.name": "gw"}),
                attributes={"v": value, "w": value, "": "empty key", "big": 2**64},
                kind=SpanKind.SERVER,
                status=Status(StatusCode.UNSET),
                start_time=1,
                end_time=2,
            )
        )
    with caplog.at_level(logging.ERROR):
        same(spans)
        same(spans[::-1])
    assert "Failed to encode key big" in caplog.text
    assert len(otlp_encode._kept) <= 5
