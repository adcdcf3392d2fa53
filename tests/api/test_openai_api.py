"""The OpenAI routes through the real app and pipeline (engine double), schema-checked."""

from __future__ import annotations

import orjson
import pytest

from tests.api.conftest import ADMIN, auth

CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}


def sse_payloads(text: str) -> list[object]:
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else orjson.loads(e) for e in events]


async def test_models_lists_base_and_allowed_tunes(client, validate_schema):
    r = await client.get("/v1/models", headers=auth("acme"))
    assert r.status_code == 200
    validate_schema("ListModelsResponse", r.json())
    ids = {m["id"]: m for m in r.json()["data"]}
    assert set(ids) == {"test-base", "support", "legal", "extract"}
    assert ids["legal"]["parent"] == "test-base" and "parent" not in ids["test-base"]
    r = await client.get("/v1/models", headers=auth("narrow"))
    assert {m["id"] for m in r.json()["data"]} == {"test-base", "support"}


@pytest.mark.parametrize(
    "model,parent",
    [
        ("test-base", None),
        ("legal", "test-base"),
        ("support@1", "test-base"),
        ("default", "test-base"),
    ],
)
async def test_a_model_the_key_may_use_is_retrieved(client, validate_schema, model, parent):
    r = await client.get(f"/v1/models/{model}", headers=auth("acme"))
    assert r.status_code == 200, r.text
    validate_schema("Model", r.json())
    assert r.json()["id"] == model and r.json()["object"] == "model"
    assert r.json().get("parent") == parent
    listed = (await client.get("/v1/models", headers=auth("acme"))).json()["data"]
    if model in {m["id"] for m in listed}:  # the same object as in the list
        assert r.json() in listed


@pytest.mark.parametrize("model", ["nope", "legal", "support@9", "a/b", "..%2Fetc"])
async def test_retrieving_an_unknown_or_forbidden_model_is_the_same_404(
    client, validate_schema, model
):
    r = await client.get(f"/v1/models/{model}", headers=auth("narrow"))
    assert r.status_code == 404, r.text
    validate_schema("ErrorResponse", r.json())
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["type"] == "invalid_request_error"


async def test_chat_non_streaming(client, engine, validate_schema):
    body = {
        **CHAT,
        "temperature": 0,
        "max_tokens": 10,
        "seed": 7,
        "stop": ["zz"],
        "unknown_field": {"x": 1},
        "user": "u1",
    }
    r = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert r.status_code == 200, r.text
    data = r.json()
    validate_schema("CreateChatCompletionResponse", data)
    assert data["model"] == "support"
    assert data["choices"][0]["message"]["content"].startswith("[support]")
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 6
    req = engine.requests[-1]
    assert (req.temperature, req.max_tokens, req.seed, req.stop) == (0.0, 10, 7, ("zz",))
    assert req.adapter is not None and req.adapter.name == "support@1"
    assert r.headers["x-request-id"]


async def test_chat_streaming_matches_non_streaming(client, validate_schema):
    body = {**CHAT, "temperature": 0}
    whole = (await client.post("/v1/chat/completions", json=body, headers=auth())).json()
    r = await client.post(
        "/v1/chat/completions",
        headers=auth(),
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_payloads(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate_schema("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_completions_streamed_and_not(client, validate_schema):
    body = {"model": "legal", "prompt": "Once upon", "max_tokens": 3}
    r = await client.post("/v1/completions", json=body, headers=auth())
    assert r.status_code == 200, r.text
    validate_schema("CreateCompletionResponse", r.json())
    choice = r.json()["choices"][0]
    assert choice["text"] == "[legal] answer with" and choice["finish_reason"] == "length"
    r = await client.post("/v1/completions", json={**body, "stream": True}, headers=auth())
    events = sse_payloads(r.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert text == choice["text"]
    final = events[-2]
    validate_schema("CreateCompletionResponse", final)
    assert final["choices"][0]["finish_reason"] == "length"


async def test_default_model_resolves_to_tenant_binding(client, engine):
    r = await client.post("/v1/chat/completions", json={**CHAT, "model": "default"}, headers=auth())
    assert r.status_code == 200 and r.json()["model"] == "legal"
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "default"}, headers=auth("narrow")
    )
    assert r.json()["model"] == "test-base" and engine.requests[-1].adapter is None


@pytest.mark.parametrize("model", ["nope", "legal", "../etc", "test-base@x"])
async def test_unknown_and_forbidden_models_are_the_same_404(client, validate_schema, model):
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": model}, headers=auth("narrow")
    )
    assert r.status_code == 404
    validate_schema("ErrorResponse", r.json())
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["message"] == (
        f"The model `{model}` does not exist or you do not have access to it."
    )


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {ADMIN}"}, "invalid_api_key"),
    ],
)
async def test_bad_keys_get_401(client, validate_schema, headers, code):
    for method, path in (
        ("GET", "/v1/models"),
        ("GET", "/v1/models/support"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
    ):
        r = await client.request(method, path, json=CHAT, headers=headers)
        assert r.status_code == 401, path
        validate_schema("ErrorResponse", r.json())
        assert r.json()["error"]["code"] == code
        assert r.json()["error"]["type"] == "authentication_error"
        assert "wrong" not in r.text


@pytest.mark.parametrize(
    "patch,param",
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content",
        ),
        ({"model": 5}, "model"),
        ({"seed": "x"}, "seed"),
        ({"max_tokens": 62}, "max_tokens"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_out_of_range_parameters_are_400(client, engine, validate_schema, patch, param):
    r = await client.post("/v1/chat/completions", json={**CHAT, **patch}, headers=auth())
    assert r.status_code == 400, r.text
    validate_schema("ErrorResponse", r.json())
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert engine.requests == []


@pytest.mark.parametrize(
    "route,patch,param",
    [
        ("chat", {"n": 2}, "n"),
        ("chat", {"logprobs": True}, "logprobs"),
        ("chat", {"tools": [{"type": "function"}]}, "tools"),
        ("completions", {"echo": True}, "echo"),
        ("completions", {"best_of": 3}, "best_of"),
        ("completions", {"suffix": "x"}, "suffix"),
        ("completions", {"logprobs": 2}, "logprobs"),
    ],
)
async def test_a_parameter_accepted_with_one_value_only_says_so(
    client, engine, validate_schema, route, patch, param
):
    if route == "chat":
        r = await client.post("/v1/chat/completions", json={**CHAT, **patch}, headers=auth())
    else:
        body = {"model": "support", "prompt": "hi", **patch}
        r = await client.post("/v1/completions", json=body, headers=auth())
    assert r.status_code == 400, r.text
    validate_schema("ErrorResponse", r.json())
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "unsupported_value"
    assert err["message"].startswith(f"Unsupported value for '{param}': ")
    assert "Input should be" not in err["message"] and engine.requests == []


async def test_a_union_parameter_names_what_is_wrong_with_the_form_it_took(client):
    stops = {**CHAT, "stop": ["a", "b", "c", "d", "e"]}
    r = await client.post("/v1/chat/completions", json=stops, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
    assert "at most 4 items" in r.json()["error"]["message"]
    prompts = {"model": "support", "prompt": ["a", "b"]}
    r = await client.post("/v1/completions", json=prompts, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert "at most 1 item" in r.json()["error"]["message"]
    r = await client.post("/v1/chat/completions", json={**CHAT, "stop": 5}, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"  # no form matched


async def test_missing_model_and_prompt(client, validate_schema):
    r = await client.post("/v1/completions", json={"model": "support"}, headers=auth())
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "prompt"
    assert r.json()["error"]["code"] == "missing_required_parameter"
    r = await client.post(
        "/v1/completions", json={"model": "support", "prompt": ""}, headers=auth()
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    validate_schema("ErrorResponse", r.json())


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_malformed_json_is_400(client, validate_schema, raw):
    r = await client.post(
        "/v1/chat/completions", content=raw, headers={**auth(), "content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    validate_schema("ErrorResponse", r.json())
    assert r.json()["error"]["code"] in ("invalid_json", "invalid_value")


async def test_oversized_body_is_413(client, validate_schema):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    r = await client.post("/v1/chat/completions", json=big, headers=auth())
    assert r.status_code == 413
    validate_schema("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "request_too_large"


async def test_engine_not_ready_is_503(client, engine, validate_schema):
    engine.ready = False
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    validate_schema("ErrorResponse", r.json())
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200
    engine.ready = True
    assert (await client.get("/readyz")).status_code == 200


async def test_unknown_route_and_method(client, validate_schema):
    r = await client.get("/v1/nothing", headers=auth())
    assert r.status_code == 404
    validate_schema("ErrorResponse", r.json())
    r = await client.get("/v1/chat/completions", headers=auth())
    assert r.status_code == 405
    validate_schema("ErrorResponse", r.json())


async def test_admin_load_needs_admin_token(client, engine):
    r = await client.post("/admin/tunes/legal/load", headers=auth())
    assert r.status_code == 401
    r = await client.post("/admin/tunes/legal/load", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json()["loaded"] is True
    assert any(a.name == "legal@1" for a in engine.loaded.values())
    r = await client.post("/admin/tunes/ghost/load", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "tune_not_found"


async def test_metrics_count_requests(client):
    await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    await client.post("/v1/chat/completions", json={**CHAT, "model": "x"}, headers=auth())
    text = (await client.get("/metrics")).text
    assert (
        'tunegate_requests_total{route="chat",status="2xx",tenant="acme",tune="support",version="1"} 1.0'
        in text
    )
    assert (
        'tunegate_requests_total{route="chat",status="4xx",tenant="acme",tune="none",version=""} 1.0'
        in text
    )
    assert "tg-test" not in text


async def test_unload_refuses_while_requests_run(client, engine):
    import asyncio

    gate = engine.hold()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    running = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT, headers=auth()))
    await asyncio.sleep(0.05)
    r = await client.post("/admin/tunes/support/unload", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "tune_in_use"
    gate.set()
    assert (await running).status_code == 200
    r = await client.post("/admin/tunes/support/unload", headers=admin)
    assert r.status_code == 200 and not any(a.name == "support@1" for a in engine.loaded.values())
