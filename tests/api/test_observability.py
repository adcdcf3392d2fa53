"""Metrics, traces and logs of the real app (engine double): exact values after a known sequence,
promtool on a scrape, several worker processes, stage spans under a client's traceparent, and
JSON log lines with the request id."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from gateway.api import create_app
from gateway.auth import hash_key
from gateway.observability.logs import ContextFilter, log_config
from gateway.observability.tracing import Tracing
from tests.api.conftest import ADMIN, KEYS, EchoEngine, auth, write_config
from tests.prom import samples

ROOT = Path(__file__).resolve().parents[2]
POLICY = f"""
default:
  safety:
    input: [{{id: secrets-in, kind: api_key, action: block}}]
    output: [{{id: email-out, kind: email, action: redact}}]
  input_rules:
    deny_patterns: [{{id: no-passwords, pattern: "(?i)password"}}]
tenants:
  - name: acme
    keys: [{{id: acme-1, sha256: {hash_key(KEYS["acme"])}}}]
    tunes: [support, legal, extract]
    default_tune: legal
    limits: {{requests_per_minute: 3}}
  - name: narrow
    keys: [{{id: narrow-1, sha256: {hash_key(KEYS["narrow"])}}}]
    tunes: [support]
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def chat(content: str = "hello there", model: str = "support", **kw: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def obs(
    request: pytest.FixtureRequest, tmp_path: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[httpx.AsyncClient]:
    settings = write_config(tmp_path)
    (settings.policies_dir / "tenants.yaml").write_text(POLICY)
    provider = TracerProvider(sampler=getattr(request, "param", {}).get("sampler"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = EchoEngine()
    stages = getattr(request, "param", {}).get("stages")
    app = create_app(settings, engine=engine, tracing=Tracing(provider, stages=stages))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        c.engine = engine  # type: ignore[attr-defined]
        c.stages = stages or "request"  # type: ignore[attr-defined]
        yield c


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_exact_after_a_known_sequence(obs):
    served = [await obs.post("/v1/chat/completions", json=chat(), headers=auth()) for _ in range(2)]
    stream = await obs.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert [r.status_code for r in [*served, stream]] == [200, 200, 200]
    limited = await obs.post("/v1/chat/completions", json=chat(), headers=auth())
    assert limited.status_code == 429
    bad_key = await obs.post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer tg-wrong"}
    )
    assert bad_key.status_code == 401
    blocked = await obs.post(
        "/v1/chat/completions",
        json=chat("my key is sk-abcdefghijklmnopqrstuvwxyz123456"),
        headers=auth("narrow"),
    )
    assert blocked.json()["error"]["code"] == "content_policy_violation"
    denied = await obs.post(
        "/v1/chat/completions", json=chat("my password is x"), headers=auth("narrow")
    )
    assert denied.status_code == 400
    forbidden = await obs.post(
        "/v1/chat/completions", json=chat(model="legal"), headers=auth("narrow")
    )
    assert forbidden.status_code == 404

    r = await obs.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    req = "tunegate_requests_total"
    assert (
        value(m, req, route="chat", tenant="acme", tune="support", version="1", status="2xx") == 3
    )
    assert (
        value(m, req, route="chat", tenant="acme", tune="support", version="1", status="4xx") == 1
    )
    assert value(m, req, route="chat", tenant="", tune="none", version="", status="4xx") == 1
    assert value(m, req, route="chat", tenant="narrow", tune="none", version="", status="4xx") == 3
    assert sum(v for (n, _), v in m.items() if n == req) == 8
    assert value(m, "tunegate_rate_limited_total", tenant="acme", reason="requests") == 1
    assert value(m, "tunegate_safety_findings_total", rule="secrets-in", action="block") == 1
    assert (
        value(m, "tunegate_policy_denials_total", tenant="narrow", reason="input_rule_violation")
        == 1
    )
    ttft = "tunegate_time_to_first_token_seconds_count"
    assert value(m, ttft, tenant="acme", tune="support") == 3
    dur = "tunegate_request_duration_seconds_count"
    assert value(m, dur, route="chat", tenant="acme", tune="support") == 4
    # The echo engine's answer is six words: five gaps between streamed chunks in one stream.
    assert value(m, "tunegate_time_between_tokens_seconds_count", tune="support") >= 5
    tokens = "tunegate_tokens_total"
    assert value(m, tokens, tenant="acme", tune="support", kind="completion") == 3 * 6
    assert value(m, "tunegate_adapters_resident") >= 1
    assert value(m, "tunegate_engine_ready") == 1
    assert value(m, "tunegate_audit_events_total", event="committed") >= 1
    assert value(m, "tunegate_audit_write_duration_seconds_count") >= 1
    # Nothing the client sent becomes a label: the wrong key, the prompt, the model it asked for.
    assert "tg-wrong" not in r.text and "password" not in r.text and "sk-abc" not in r.text


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make test` installs Debian's prometheus package"
    return path


async def test_promtool_accepts_a_scrape(obs):
    await obs.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    await obs.post("/v1/chat/completions", json=chat("sk-" + "x" * 30), headers=auth())
    text = (await obs.get("/metrics")).text
    run = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "" and run.stderr.strip() == ""  # no lint findings either


WORKER = textwrap.dedent(
    """
    import sys
    from gateway.observability.metrics import Metrics
    m = Metrics()
    n = int(sys.argv[1])
    for _ in range(n):
        m.requests.labels("chat", "acme", "support", "1", "2xx").inc()
        m.request_duration.labels("chat", "acme", "support").observe(0.2)
    m.engine_running.set(n)
    m.engine_ready.set(1)
    if sys.argv[2] == "render":
        sys.stdout.buffer.write(m.render())
    """
)


def test_metrics_add_up_across_worker_processes(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(n: int, mode: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", WORKER, str(n), mode],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    worker(3, "quiet")
    worker(4, "quiet")
    m = samples(worker(5, "render"))
    labels = {"route": "chat", "tenant": "acme", "tune": "support", "version": "1", "status": "2xx"}
    assert value(m, "tunegate_requests_total", **labels) == 12
    dur = {"route": "chat", "tenant": "acme", "tune": "support"}
    assert value(m, "tunegate_request_duration_seconds_count", **dur) == 12
    # Live gauges count only processes still running: the two finished workers are marked dead
    # by the server in production; here every value file is still present, so they add up.
    assert value(m, "tunegate_engine_requests_running") >= 5
    run = subprocess.run(
        [promtool(), "check", "metrics"],
        input=worker(1, "render"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


QUICK_STAGES = {"auth", "policy", "input_safety", "resolve", "prepare", "admit", "postprocess"}
WAITING_STAGES = {"engine_queue", "generate", "audit"}


@pytest.mark.parametrize(
    "obs",
    [{"stages": "spans"}, {"stages": "attributes"}, {}],
    ids=["spans", "attributes", "request"],
    indirect=True,
)
async def test_stage_spans_under_the_clients_traceparent(obs, exporter):
    headers = {**auth(), "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    r = await obs.post(
        "/v1/chat/completions", json=chat(max_tokens=4, temperature=0.5), headers=headers
    )
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is not None and s.parent.span_id == int(PARENT_ID, 16)]
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.name == "chat support"
    attrs = dict(root.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "support"
    assert attrs["gen_ai.request.max_tokens"] == 4
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.id"] == r.json()["id"]
    assert attrs["gen_ai.usage.output_tokens"] == r.json()["usage"]["completion_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == ("length",)
    assert attrs["tunegate.tenant"] == "acme" and attrs["tunegate.tune.version"] == "1"
    assert attrs["http.response.status_code"] == 200
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id
    ]
    names = {s.name for s in children}
    durations = {
        k.removeprefix("tunegate.stage_ms."): v
        for k, v in root.attributes.items()
        if k.startswith("tunegate.stage_ms.")
    }
    if obs.stages == "spans":  # every stage a child span
        assert names >= QUICK_STAGES | WAITING_STAGES, names
        assert not durations
    elif obs.stages == "attributes":  # quick stages are durations on the request span
        assert names >= WAITING_STAGES and not names & QUICK_STAGES, names
        assert set(durations) == QUICK_STAGES, durations
    else:  # the default: one span, every stage a duration on it
        assert not names, names
        assert set(durations) >= QUICK_STAGES | WAITING_STAGES, durations
        assert set(durations) <= QUICK_STAGES | WAITING_STAGES | {"adapter_load"}, durations
    if durations:
        total_ms = (root.end_time - root.start_time) / 1e6
        assert all(0 <= v <= total_ms for v in durations.values()), durations
    assert all(s.context.trace_id == root.context.trace_id for s in children)
    assert all(s.start_time <= s.end_time for s in children)
    text = json.dumps([dict(s.attributes) for s in spans])
    assert KEYS["acme"] not in text and "hello there" not in text


async def test_streamed_request_has_its_spans_and_engine_gets_the_trace_context(obs, exporter):
    headers = {**auth(), "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    async with obs.stream(
        "POST",
        "/v1/completions",
        json={"model": "legal", "prompt": "hi", "stream": True},
        headers=headers,
    ) as r:
        body = (await r.aread()).decode()
    assert body.rstrip().endswith("data: [DONE]")
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "text_completion legal"]
    assert root.parent.span_id == int(PARENT_ID, 16)
    children = {s.name for s in spans if s.parent and s.parent.span_id == root.context.span_id}
    assert not children, children  # the default level: one span per request
    for stage in (*WAITING_STAGES, "postprocess"):
        assert root.attributes[f"tunegate.stage_ms.{stage}"] >= 0, stage
    # The engine request carries the W3C context of this request's span (for remote engines).
    sent = obs.engine.requests[-1].trace_headers
    assert sent["traceparent"].startswith(f"00-{TRACE_ID}-{root.context.span_id:016x}-")


@pytest.mark.parametrize(
    "obs", [{"sampler": ParentBased(TraceIdRatioBased(0.0))}], ids=["dropped"], indirect=True
)
async def test_a_request_the_sampler_drops_records_no_spans(obs, exporter):
    r = await obs.post("/v1/chat/completions", json=chat(max_tokens=4), headers=auth())
    assert r.status_code == 200
    assert exporter.get_finished_spans() == ()


async def test_tracing_is_off_by_default(client, engine):
    r = await client.post(
        "/v1/chat/completions",
        json=chat(),
        headers={**auth(), "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    assert r.status_code == 200
    assert engine.requests[-1].trace_headers is None
    assert not Tracing.from_env().enabled


def test_tracing_follows_the_standard_variables(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    assert not Tracing.from_env().enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    on = Tracing.from_env()
    assert on.enabled
    on.shutdown()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not Tracing.from_env().enabled


async def test_json_log_lines_carry_the_request_id_and_no_secrets(obs):
    stream = io.StringIO()
    config = log_config("debug", "json")
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    from pythonjsonlogger.json import JsonFormatter

    fmt = config["formatters"]["main"]
    handler.setFormatter(
        JsonFormatter(fmt["fmt"], rename_fields=fmt["rename_fields"], timestamp=False)
    )
    probe = logging.getLogger("gateway.test_probe")
    probe.addHandler(handler)
    probe.setLevel(logging.DEBUG)
    try:
        probe.info("outside a request")
        engine = obs.engine

        original = engine.stream

        async def logging_stream(request):
            probe.info("engine asked with Authorization: Bearer %s", KEYS["acme"])
            async for out in original(request):
                yield out

        engine.stream = logging_stream
        r = await obs.post(
            "/v1/chat/completions", json=chat(), headers={**auth(), "x-request-id": "req-123"}
        )
        assert r.status_code == 200
    finally:
        probe.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "outside a request" and "request_id" not in lines[0]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    inside = lines[1]
    assert inside["request_id"] == "req-123" and inside["level"] == "INFO"
    assert KEYS["acme"] not in stream.getvalue() and "[SECRET]" in inside["message"]


async def test_secret_canary_never_leaves_through_logs_metrics_spans_audit_or_bodies(
    obs, exporter, caplog, tmp_path
):
    """Plant the tenant's key and the admin token, walk the error paths with debug logging,
    then look for them everywhere the gateway writes: zero hits."""
    key, admin = KEYS["acme"], ADMIN
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def call(method: str, path: str, **kw: object) -> None:
        r = await obs.request(method, path, **kw)
        seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")

    bearer = {"Authorization": f"Bearer {key}"}
    await call("POST", "/v1/chat/completions", json=chat(), headers=bearer)
    await call(
        "POST", "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {key}x"}
    )
    await call(
        "POST", "/v1/chat/completions", json=chat(), headers={"Authorization": f"Basic {key}"}
    )
    await call("POST", "/v1/chat/completions", json=chat(), headers={"x-api-key": key})
    await call("POST", f"/v1/chat/completions?api_key={key}", json=chat())
    await call("POST", "/v1/chat/completions", content=b"{not json", headers=bearer)
    await call("POST", "/v1/chat/completions", json=chat(f"my key is {key}"), headers=bearer)
    await call("POST", "/v1/chat/completions", json=chat(max_tokens=-1), headers=bearer)
    await call("POST", "/v1/chat/completions", json=chat(model="nope"), headers=bearer)
    await call(
        "POST", "/v1/completions", json={"model": "legal", "prompt": "x" * 9000}, headers=bearer
    )
    await call("GET", "/admin/tenants", headers={"Authorization": f"Bearer {admin}x"})
    await call("GET", "/admin/tenants", headers=bearer)
    await call("GET", "/admin/tenants", headers={"Authorization": f"Bearer {admin}"})
    await call(
        "PUT",
        "/admin/tenants/acme/tune",
        json={"tune": "nope"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    await call(
        "DELETE", "/admin/tenants/acme/keys/nope", headers={"Authorization": f"Bearer {admin}"}
    )
    await call("GET", "/v1/models", headers=bearer)
    await call("GET", "/metrics")
    await obs.post("/v1/chat/completions", json=chat(), headers=bearer)  # the pipeline still works
    assert len(seen) == 17

    logs = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.__dict__.get('request_id', '')}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))  # the test's own client
    )
    metrics_text = (await obs.get("/metrics")).text
    spans = json.dumps(
        [
            [s.name, dict(s.attributes), [e.name for e in s.events]]
            for s in exporter.get_finished_spans()
        ],
        default=str,
    )
    audit = "\n".join(p.read_text() for p in sorted((tmp_path / "audit").glob("*.jsonl")))
    assert audit.count("\n") >= 10  # every request left a record
    places = {"logs": logs, "metrics": metrics_text, "spans": spans, "audit": audit}
    places["responses"] = "\n".join(seen)
    for secret in (key, admin):
        for where, text in places.items():
            assert secret not in text, f"a planted secret appears in {where}"
