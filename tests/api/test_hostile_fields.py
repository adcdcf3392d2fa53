"""Hostile or engine-specific fields: each a 400 in the OpenAI envelope before the engine sees
anything, and the next ordinary request still succeeds."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import auth

BASE = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}
DEEP: dict = {"type": "object"}
for _ in range(40):
    DEEP = {"type": "object", "properties": {"x": DEEP}}

HOSTILE = {
    "bias-out-of-vocab": {"logit_bias": {"999999": 5}},
    "bias-non-integer-key": {"logit_bias": {"hello": 5}},
    "bias-negative-key": {"logit_bias": {"-3": 5}},
    "bias-nan": {"logit_bias": {"5": float("nan")}},
    "bias-infinite": {"logit_bias": {"5": float("inf")}},
    "bias-too-large": {"logit_bias": {"5": 1000}},
    "bias-not-a-map": {"logit_bias": [1, 2]},
    "schema-invalid": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": 5}},
        }
    },
    "schema-integer-past-64-bits": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "integer", "maximum": 2**70}},
        }
    },
    "schema-deep": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": DEEP}}
    },
    "tools": {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]
    },
    "chat-template": {"chat_template": "{{ raise('x') }}"},
    "chat-template-kwargs": {"chat_template_kwargs": {"enable_thinking": True}},
    "prompt-embeds": {"prompt_embeds": "AAAA"},
    "cache-salt": {"cache_salt": "tenant-b"},
    "guided-json": {"guided_json": {"type": "object"}},
    "structured-outputs": {"structured_outputs": {"regex": "(a|"}},
    "image-url": {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
            }
        ]
    },
    "audio": {
        "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA"}}]}
        ]
    },
    "empty-messages": {"messages": []},
    "empty-prompt": {"messages": [{"role": "user", "content": ""}]},
    "n-above-cap": {"n": 4},
    "max-tokens-beyond-context": {"max_tokens": 10_000},
    "max-tokens-zero": {"max_tokens": 0},
    "temperature-nan": {"temperature": float("nan")},
    "stop-empty": {"stop": [""]},
    "seed-huge": {"seed": 2**70},
    "max-tokens-past-64-bits": {"max_tokens": 2**70},
    "max-completion-tokens-past-64-bits": {"max_completion_tokens": 2**64},
}


@pytest.mark.parametrize("extra", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_field_is_a_400_before_the_engine(client, engine, extra):
    before = len(engine.requests)
    body = json.dumps({**BASE, **extra}, allow_nan=True)  # NaN and Infinity as clients send them
    r = await client.post(
        "/v1/chat/completions",
        content=body,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (
        set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    )
    assert len(engine.requests) == before  # the engine saw nothing
    ok = await client.post("/v1/chat/completions", json=BASE, headers=auth())
    assert ok.status_code == 200


async def test_a_valid_logit_bias_reaches_the_engine(client, engine):
    r = await client.post(
        "/v1/chat/completions", json={**BASE, "logit_bias": {"5": 10, "17": -100}}, headers=auth()
    )
    assert r.status_code == 200
    assert engine.requests[-1].logit_bias == {5: 10.0, 17: -100.0}


async def test_tenants_get_their_own_server_set_cache_salt(client, engine):
    await client.post("/v1/chat/completions", json=BASE, headers=auth("acme"))
    await client.post("/v1/chat/completions", json=BASE, headers=auth("acme"))
    await client.post("/v1/chat/completions", json=BASE, headers=auth("narrow"))
    a1, a2, n1 = (req.cache_salt for req in engine.requests[-3:])
    assert a1 == a2 and a1 != n1 and a1 and n1
    assert "acme" not in a1  # derived, not the tenant's name


async def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(client, engine):
    calls = []
    original = engine.tokenize_chat

    async def counting(messages):
        calls.append(len(messages))
        return await original(messages)

    engine.tokenize_chat = counting
    huge = "x" * (engine.max_model_len * engine.max_token_chars + 1)
    body = {**BASE, "messages": [{"role": "user", "content": huge}]}
    r = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert calls == []  # never tokenized
    assert (await client.post("/v1/chat/completions", json=BASE, headers=auth())).status_code == 200
    assert calls == [1]


async def test_too_many_or_too_large_headers_are_a_431(client):
    many = {f"x-h{i}": "v" for i in range(150)}
    r = await client.post("/v1/chat/completions", json=BASE, headers={**auth(), **many})
    assert r.status_code == 431 and r.json()["error"]["code"] == "request_headers_too_large"
    big = {"x-big": "v" * 40_000}
    r = await client.post("/v1/chat/completions", json=BASE, headers={**auth(), **big})
    assert r.status_code == 431
    assert (await client.post("/v1/chat/completions", json=BASE, headers=auth())).status_code == 200
