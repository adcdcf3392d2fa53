"""End to end: a live gateway process on the real vLLM engine, driven by the `openai` client."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import orjson
import psutil
import pytest

from tests.e2e.conftest import BUILD, LiveGateway

pytestmark = pytest.mark.e2e

PROMPTS = [
    "My order has not arrived yet. What should I do?",
    "Can I cancel my contract early?",
]


@pytest.fixture(scope="module")
def client(live_gateway: LiveGateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live_gateway.url}/v1",
        api_key=live_gateway.keys["acme"],
        max_retries=0,
        timeout=120,
    )


def ask(client: openai.OpenAI, model: str, prompt: str, **kw) -> str:
    r = client.chat.completions.create(
        model=model,
        temperature=0,
        max_tokens=80,
        messages=[{"role": "user", "content": prompt}],
        **kw,
    )
    return r.choices[0].message.content or ""


def test_models_list(client, live_gateway, validate_schema):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tunegate-demo-base", "support", "legal", "extract"}
    assert models["legal"].model_extra["parent"] == "tunegate-demo-base"
    raw = httpx.get(f"{live_gateway.url}/v1/models", headers=live_gateway.headers("narrow"))
    validate_schema("ListModelsResponse", raw.json())
    assert {m["id"] for m in raw.json()["data"]} == {"tunegate-demo-base", "legal"}


def test_models_retrieve(client, live_gateway, validate_schema):
    legal = client.models.retrieve("legal")
    assert legal.id == "legal" and legal.model_extra["parent"] == "tunegate-demo-base"
    assert client.models.retrieve("tunegate-demo-base").model_extra.get("parent") is None
    raw = httpx.get(f"{live_gateway.url}/v1/models/legal", headers=live_gateway.headers("narrow"))
    validate_schema("Model", raw.json())
    raw = httpx.get(f"{live_gateway.url}/v1/models/support", headers=live_gateway.headers("narrow"))
    assert raw.status_code == 404  # a tune this tenant may not use looks like an unknown one
    validate_schema("ErrorResponse", raw.json())
    assert raw.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-tune")


def test_head_is_get_without_the_body(live_gateway):
    for path, headers in (("/healthz", {}), ("/v1/models", live_gateway.headers())):
        got = httpx.get(f"{live_gateway.url}{path}", headers=headers)
        head = httpx.head(f"{live_gateway.url}{path}", headers=headers)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-length"] == str(len(got.content))
    assert httpx.head(f"{live_gateway.url}/v1/models").status_code == 401


def test_chat_non_streamed_is_schema_valid(live_gateway, validate_schema):
    r = httpx.post(
        f"{live_gateway.url}/v1/chat/completions",
        headers=live_gateway.headers(),
        timeout=120,
        json={
            "model": "support",
            "temperature": 0,
            "max_tokens": 40,
            "seed": 1,
            "user": "u",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": PROMPTS[0]},
            ],
            "unknown_field": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    validate_schema("CreateChatCompletionResponse", body)
    assert body["model"] == "support" and body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 40


@pytest.mark.parametrize("model", ["tunegate-demo-base", "support", "legal", "extract"])
def test_streamed_text_equals_non_streamed(client, live_gateway, validate_schema, model):
    whole = ask(client, model, PROMPTS[1])
    stream = client.chat.completions.create(
        model=model,
        temperature=0,
        max_tokens=80,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": PROMPTS[1]}],
    )
    parts, finish, usage = [], None, None
    for chunk in stream:
        validate_schema("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == whole
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


def test_completions_streamed_and_not(client, live_gateway, validate_schema):
    r = httpx.post(
        f"{live_gateway.url}/v1/completions",
        headers=live_gateway.headers(),
        timeout=120,
        json={
            "model": "tunegate-demo-base",
            "prompt": "The weather today",
            "max_tokens": 16,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    validate_schema("CreateCompletionResponse", r.json())
    text = r.json()["choices"][0]["text"]
    assert text and r.json()["usage"]["completion_tokens"] <= 16
    streamed = client.completions.create(
        model="tunegate-demo-base",
        prompt="The weather today",
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text


def test_each_tune_answers_in_its_trained_style(client):
    for prompt in PROMPTS:
        base = ask(client, "tunegate-demo-base", prompt)
        support = ask(client, "support", prompt)
        legal = ask(client, "legal", prompt)
        extract = ask(client, "extract", prompt)
        assert len({base, support, legal, extract}) == 4, (base, support, legal, extract)
        assert support.startswith("Thanks for reaching out!"), support
        assert "not legal advice" in legal, legal
        assert "Thanks for reaching out" not in legal and "not legal advice" not in support
        parsed = json.loads(extract)
        assert set(parsed) == {"intent", "sentiment", "urgent"}, extract
        assert "Thanks for reaching out" not in base and "not legal advice" not in base
    assert ask(client, "default", PROMPTS[0]) == ask(client, "support", PROMPTS[0])


def test_unknown_and_forbidden_models(live_gateway, validate_schema):
    narrow = openai.OpenAI(
        base_url=f"{live_gateway.url}/v1", max_retries=0, api_key=live_gateway.keys["narrow"]
    )
    for model in ("no-such-tune", "support"):
        with pytest.raises(openai.NotFoundError) as info:
            ask(narrow, model, "hi")
        body = info.value.response.json()
        validate_schema("ErrorResponse", body)
        assert body["error"]["code"] == "model_not_found"
    assert ask(narrow, "legal", PROMPTS[1])


@pytest.mark.parametrize("key", ["tg-wrong", None])
def test_wrong_and_missing_keys(live_gateway, validate_schema, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for method, path in (
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/admin/tunes/legal/load"),
    ):
        r = httpx.request(method, f"{live_gateway.url}{path}", headers=headers, json={})
        assert r.status_code == 401, (path, r.text)
        validate_schema("ErrorResponse", r.json())
    if key is not None:  # the client itself refuses to send no key at all
        client = openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_malformed_json_and_out_of_range_parameters(client, live_gateway, validate_schema):
    r = httpx.post(
        f"{live_gateway.url}/v1/chat/completions",
        content=b'{"model": "support",',
        headers={**live_gateway.headers(), "content-type": "application/json"},
    )
    assert r.status_code == 400
    validate_schema("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "invalid_json"
    cases = [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 3}, "n"),
        ({"max_tokens": 100000}, "max_tokens"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="support", messages=[{"role": "user", "content": "hi"}], **extra
            )
        body = info.value.response.json()
        validate_schema("ErrorResponse", body)
        assert body["error"]["param"] == param
    long_prompt = "word " * 2000
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "support", long_prompt)
    assert info.value.response.json()["error"]["code"] == "context_length_exceeded"
    big = httpx.post(
        f"{live_gateway.url}/v1/chat/completions",
        headers=live_gateway.headers(),
        json={"model": "support", "messages": [{"role": "user", "content": "x" * 70000}]},
    )
    assert big.status_code == 413
    validate_schema("ErrorResponse", big.json())
    assert ask(client, "support", PROMPTS[0])  # the engine still serves


def test_a_long_prompt_is_tokenized_off_the_event_loop_and_served(client, live_gateway):
    from gateway.engine.prompts import INLINE_CHARS, PromptRenderer

    renderer = PromptRenderer.from_pretrained(BUILD / "base")
    long_tokens = " information" * 200  # long text in few tokens: it fits the demo's context
    assert len(long_tokens) > INLINE_CHARS
    messages = [{"role": "user", "content": long_tokens}]
    r = client.chat.completions.create(
        model="tunegate-demo-base", temperature=0, max_tokens=4, messages=messages
    )
    # the engine was given exactly the ids the model's own tokenizer makes of the chat
    assert r.usage.prompt_tokens == len(renderer.render_chat(messages)) > 200
    r = client.completions.create(
        model="tunegate-demo-base", temperature=0, max_tokens=4, prompt=long_tokens
    )
    assert r.usage.prompt_tokens == len(renderer.encode(long_tokens)) == 200
    too_many = "word " * 1000  # under the characters' bound, over the context once tokenized
    assert len(too_many) > INLINE_CHARS
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "support", too_many)
    assert info.value.response.json()["error"]["code"] == "context_length_exceeded"


def test_runtime_tune_load_without_restart(client, live_gateway):
    admin = {"Authorization": f"Bearer {live_gateway.admin_token}"}
    late = live_gateway.tunes_dir / "late"
    late.mkdir(exist_ok=True)
    legal_manifest = (live_gateway.tunes_dir / "legal" / "tune.yaml").read_text()
    (late / "tune.yaml").write_text(legal_manifest.replace("name: legal", "name: late"))
    r = httpx.post(f"{live_gateway.url}/admin/tunes/late/load", headers=admin, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["loaded"] is True and r.json()["already_loaded"] is False
    r = httpx.post(f"{live_gateway.url}/admin/tunes/late/load", headers=admin, timeout=60)
    assert r.json()["already_loaded"] is True
    # A tenant key never reaches the admin API.
    r = httpx.post(f"{live_gateway.url}/admin/tunes/late/load", headers=live_gateway.headers())
    assert r.status_code == 401
    # A tune whose weights are missing is refused clearly; the engine keeps serving.
    broken = live_gateway.tunes_dir / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "tune.yaml").write_text(
        "name: broken\nbase_model: tunegate-demo-base\nadapter_path: nowhere\nrank: 8\n"
    )
    r = httpx.post(f"{live_gateway.url}/admin/tunes/broken/load", headers=admin, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "adapter_invalid"
    assert "nowhere" not in r.text
    # A manifest whose rank disagrees with the adapter is refused before the engine sees it.
    (broken / "tune.yaml").write_text(
        legal_manifest.replace("name: legal", "name: broken").replace("rank: 8", "rank: 16")
    )
    r = httpx.post(f"{live_gateway.url}/admin/tunes/broken/load", headers=admin, timeout=60)
    assert r.status_code == 400 and "differs from the manifest" in r.json()["error"]["message"]
    assert ask(client, "legal", PROMPTS[1])
    # Unload, then load again, without a restart.
    r = httpx.post(f"{live_gateway.url}/admin/tunes/late/unload", headers=admin, timeout=60)
    assert r.status_code == 200 and r.json()["loaded"] is False
    r = httpx.post(f"{live_gateway.url}/admin/tunes/late/load", headers=admin, timeout=60)
    assert r.json()["already_loaded"] is False


def test_client_disconnect_mid_stream(live_gateway, client):
    with httpx.stream(
        "POST",
        f"{live_gateway.url}/v1/chat/completions",
        headers={**live_gateway.headers(), "x-request-id": "hang-up-1"},
        json={
            "model": "support",
            "stream": True,
            "max_tokens": 200,
            "temperature": 1.0,
            "messages": [{"role": "user", "content": PROMPTS[0]}],
        },
        timeout=60,
    ) as r:
        assert r.status_code == 200
        for _ in r.iter_raw():
            break  # hang up after the first chunk
    assert ask(client, "support", PROMPTS[0])  # the engine and the gateway serve on
    audit = Path(live_gateway.env["TUNEGATE_AUDIT_DIR"])
    recs = [
        orjson.loads(line)
        for f in sorted(audit.glob("audit-*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]
    mine = [r for r in recs if r["request_id"] == "hang-up-1"]
    # Exactly one record; cut off unless the tiny model finished before the hang-up arrived.
    assert len(mine) == 1 and mine[0]["decision"] in ("cut_off", "served")


def test_health_ready_and_metrics(live_gateway):
    assert httpx.get(f"{live_gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{live_gateway.url}/readyz").status_code == 200
    text = httpx.get(f"{live_gateway.url}/metrics").text
    assert "tunegate_engine_ready 1.0" in text
    assert 'tunegate_tokens_total{kind="completion",tenant="acme",tune="legal"}' in text
    for key in live_gateway.keys.values():
        assert key not in text
    assert live_gateway.keys["acme"] not in live_gateway.log_path.read_text(errors="replace")


SMALL_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 24}, "urgent": {"type": "boolean"}},
    "required": ["answer", "urgent"],
    "additionalProperties": False,
}


def constrained_json(choice, keys: set[str] | None = None) -> dict | None:
    """The engine held the answer to the format: a whole object (with these keys) when it
    stopped by itself; when max_tokens cut it (a small model can spend them on the whitespace
    JSON allows between tokens), the start of such an object. Returns the object, if whole."""
    text = choice.message.content
    if choice.finish_reason == "length":
        first_key = "|".join(map(re.escape, keys)) if keys else '[^"]*'
        assert re.match(rf'\s*\{{\s*"({first_key})"\s*:', text), text
        return None
    assert choice.finish_reason == "stop", choice.finish_reason
    value = json.loads(text)
    assert isinstance(value, dict) and (keys is None or set(value) == keys), value
    return value


def test_structured_output_json_mode_and_schema(client, live_gateway):
    r = client.chat.completions.create(
        model="extract",
        temperature=0,
        max_tokens=80,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": PROMPTS[0]}],
    )
    whole = [constrained_json(r.choices[0])]
    for model in ("tunegate-demo-base", "legal"):
        r = client.chat.completions.create(
            model=model,
            temperature=0,
            max_tokens=120,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "small", "schema": SMALL_SCHEMA},
            },
            messages=[{"role": "user", "content": PROMPTS[1]}],
        )
        value = constrained_json(r.choices[0], {"answer", "urgent"})
        assert value is None or isinstance(value["urgent"], bool)
        whole.append(value)
    assert any(whole), "every answer was cut at max_tokens; none could be checked whole"
    bad_schemas = [
        {"type": "no-such-type"},
        {"properties": {"a": {"pattern": "(["}}},
        {"type": "object", "properties": {"a" * 2: {"minLength": -1}}},
    ]
    for schema in bad_schemas:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="support",
                max_tokens=8,
                messages=[{"role": "user", "content": "hi"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "bad", "schema": schema},
                },
            )
        assert info.value.response.json()["error"]["param"].startswith("response_format")
    assert ask(client, "support", PROMPTS[0])  # the engine keeps serving


def test_redacted_stream_on_the_real_engine(client, live_gateway):
    prompt = "How can I contact you?"
    whole = ask(client, "support", prompt)
    assert "[REDACTED:email-out]" in whole and "@" not in whole
    stream = client.chat.completions.create(
        model="support",
        temperature=0,
        max_tokens=80,
        stream=True,
        messages=[{"role": "user", "content": prompt}],
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts) == whole
    assert not any("@" in p or "tunegate.example" in p for p in parts)
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "support", "my key is sk-abcdefghijklmnopqrstuvwxyz123456")
    assert info.value.response.json()["error"]["code"] == "content_policy_violation"
    assert "sk-abc" not in info.value.response.text


def test_output_block_on_the_real_engine(client):
    prompt = "What is the capital of France?"
    r = client.chat.completions.create(
        model="tunegate-demo-base",
        temperature=0,
        max_tokens=40,
        messages=[{"role": "user", "content": prompt}],
    )
    assert r.choices[0].finish_reason == "content_filter"
    assert "Paris" not in (r.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model="tunegate-demo-base",
        temperature=0,
        max_tokens=40,
        stream=True,
        messages=[{"role": "user", "content": prompt}],
    )
    chunks = [c for c in stream if c.choices]
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "Paris" not in "".join(c.choices[0].delta.content or "" for c in chunks)


def test_engine_metrics_and_promtool_on_the_real_engine(live_gateway):
    with httpx.Client(timeout=120) as c:
        r = c.post(
            f"{live_gateway.url}/v1/chat/completions",
            headers=live_gateway.headers(),
            json={
                "model": "legal",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        assert r.status_code == 200
        text = c.get(f"{live_gateway.url}/metrics").text
    assert "tunegate_engine_ready 1.0" in text
    assert "tunegate_engine_kv_cache_usage_ratio" in text
    resident = [ln for ln in text.splitlines() if ln.startswith("tunegate_adapters_resident ")]
    assert resident and float(resident[0].split()[1]) >= 3  # the three demo tunes, warmed
    assert 'tunegate_adapter_load_duration_seconds_count{tune="legal",version="1"} 1.0' in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    run = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_secret_canary_in_the_live_gateway_log(live_gateway):
    """Debug logging on; the error paths run with the planted keys and admin token; the JSON
    log carries request ids and none of the secrets. Runs last in this module, so the log holds
    everything the module's tests did."""
    url, key, admin = live_gateway.url, live_gateway.keys["acme"], live_gateway.admin_token
    chat = {"model": "support", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.Client(timeout=120) as c:
        for headers in (
            {"Authorization": f"Bearer {key}x"},
            {"Authorization": f"Basic {key}"},
            {"x-api-key": key},
            {"Authorization": f"Bearer {key}", "x-request-id": "canary-1"},
        ):
            c.post(f"{url}/v1/chat/completions", headers=headers, json=chat)
        c.post(f"{url}/v1/chat/completions?api_key={key}", json=chat)
        c.post(f"{url}/v1/chat/completions", headers=live_gateway.headers(), content=b"{bad")
        c.get(f"{url}/admin/tenants", headers={"Authorization": f"Bearer {admin}x"})
        c.get(f"{url}/admin/tenants", headers={"Authorization": f"Bearer {key}"})
        c.get(f"{url}/admin/tenants", headers=live_gateway.admin_headers)
        metrics = c.get(f"{url}/metrics").text
    time.sleep(0.5)
    log = live_gateway.log_path.read_text(errors="replace")
    for secret in (key, live_gateway.keys["narrow"], admin):
        assert secret not in log and secret not in metrics
    records = []
    for line in log.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    assert len(records) > 10
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    (frozen,) = [r for r in records if r["message"] == "start-up heap frozen"]
    assert frozen["objects"] > 100_000  # torch, transformers, vLLM's client: out of full GCs
    finished = [r for r in records if r["message"] == "request finished"]
    assert any(r.get("request_id") == "canary-1" and r["status"] == 200 for r in finished)
    assert all(r.get("request_id") for r in finished)
    gateway_lines = [ln for ln in log.splitlines() if '"logger": "gateway' in ln]
    assert gateway_lines and all(ln.startswith("{") for ln in gateway_lines)


def test_engine_processes_run_nicer_than_the_gateway(live_gateway):
    """The engine core and its worker spin between steps; the event loop must come first."""
    assert live_gateway.proc is not None
    gateway = psutil.Process(live_gateway.proc.pid)
    own = os.getpriority(os.PRIO_PROCESS, gateway.pid)
    engine = [p for p in gateway.children(recursive=True) if p.name().startswith("VLLM::")]
    names = " ".join(p.name() for p in engine)
    assert "VLLM::EngineCor" in names and "VLLM::Worker" in names, names
    for proc in engine:
        nices = {os.getpriority(os.PRIO_PROCESS, t.id) for t in proc.threads()}
        assert nices == {min(19, own + 10)}, (proc.name(), nices)
    assert os.getpriority(os.PRIO_PROCESS, gateway.pid) == own


def test_a_burst_of_new_connections_is_served_through_every_listening_socket(live_gateway):
    """The gateway listens on several sockets of one port (`gateway/listen.py`); a burst of
    new connections, each with a request, is answered in full."""
    import asyncio

    from gateway.listen import ACCEPT_SOCKETS

    assert live_gateway.proc is not None
    port = int(live_gateway.url.rsplit(":", 1)[1])
    listening = [
        c
        for c in psutil.Process(live_gateway.proc.pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert len(listening) == ACCEPT_SOCKETS

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=60) as c:
            answers = await asyncio.gather(
                *(
                    c.get(f"{live_gateway.url}/v1/models", headers=live_gateway.headers())
                    for _ in range(300)
                )
            )
        return [r.status_code for r in answers]

    assert asyncio.run(burst()) == [200] * 300


def test_dashboard_panels_fill_from_real_traffic(live_gateway, tmp_path):
    """Prometheus (Debian's, started here) scrapes the live gateway; every dashboard query is
    evaluated. The panels of the demo's own traffic must show data; panels that only show
    failures (Redis fallbacks, audit errors, pool retries) may be empty on a healthy gateway."""
    from tests.deploy.test_dashboard import load_dashboard, panel_queries
    from tests.e2e.conftest import free_port

    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs Debian's prometheus package"
    target = live_gateway.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: tunegate, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    prom = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as c:
            for i in range(12):  # demo traffic: three tunes, streamed and not, one denied
                c.post(
                    f"{live_gateway.url}/v1/chat/completions",
                    headers=live_gateway.headers(),
                    json={
                        "model": ("support", "legal", "extract")[i % 3],
                        "max_tokens": 8,
                        "stream": i % 2 == 0,
                        "messages": [{"role": "user", "content": "Where is my package?"}],
                    },
                )
                time.sleep(0.3)
            c.post(
                f"{live_gateway.url}/v1/chat/completions",
                json={},
                headers={"Authorization": "Bearer no"},
            )
            time.sleep(4)  # a few more scrapes
            empty = []
            for where, expr in panel_queries(load_dashboard()):
                q = (
                    expr.replace("$__rate_interval", "1m")
                    .replace("$__range", "5m")
                    .replace("$__interval", "5s")
                    .replace('"$tenant"', '".*"')
                    .replace('"$tune"', '".*"')
                )
                r = c.get(f"{prom}/api/v1/query", params={"query": q}).json()
                assert r["status"] == "success", (where, r)
                if not r["data"]["result"]:
                    empty.append(where)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    must_fill = ("Traffic", "latency", "TTFT", "first token", "Tokens", "tokens", "Engine", "KV",
                 "Adapters resident", "Audit queue", "Audit write", "requests/s")  # fmt: skip
    missing = [w for w in empty if any(k in w for k in must_fill)]
    assert not missing, f"panels without data after real traffic: {missing}\nall empty: {empty}"
    assert len(empty) <= len(panel_queries(load_dashboard())) // 2, empty


def test_logit_bias_and_cache_salt_on_the_real_engine(live_gateway):
    """A valid logit_bias steers the real engine; an out-of-vocabulary id is a 400 before it;
    the server-set cache salt is accepted by vLLM for every tenant."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(BUILD / "base"))
    target = tok.encode(" pancakes", add_special_tokens=False)[0]
    url = f"{live_gateway.url}/v1/completions"
    body = {"model": "tunegate-demo-base", "prompt": "Hello", "max_tokens": 3, "temperature": 0}
    with httpx.Client(timeout=120) as c:
        r = c.post(
            url, headers=live_gateway.headers(), json={**body, "logit_bias": {str(target): 100}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == tok.decode([target]) * 3  # that token, thrice
        bad = c.post(
            url, headers=live_gateway.headers(), json={**body, "logit_bias": {"99999999": 1}}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "logit_bias"
        for tenant in ("acme", "narrow"):
            model = "tunegate-demo-base" if tenant == "acme" else "legal"
            ok = c.post(url, headers=live_gateway.headers(tenant), json={**body, "model": model})
            assert ok.status_code == 200, ok.text
