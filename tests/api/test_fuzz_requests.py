"""Property tests: whatever JSON a client sends to the API routes, the answer is a 2xx or a 4xx
in the OpenAI envelope, never a 5xx, and the gateway keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway.api import create_app
from tests.api.conftest import EchoEngine, auth

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "n",
    "seed",
    "response_format",
    "logit_bias",
    "user",
    "tools",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
]
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "x"]),
        "content": values | st.text(max_size=60),
    }
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["support", "legal", "test-base", "default", "nope"]),
            "messages": st.lists(message, max_size=3),
        },
        optional={k: values for k in FIELDS[3:]},
    ),
    st.fixed_dictionaries(
        {"model": st.sampled_from(["support", "legal"]), "prompt": values | st.text(max_size=80)},
        optional={k: values for k in FIELDS[3:]},
    ),
)


def check(status: int, text: str) -> None:
    assert status < 500, text
    if status >= 400:
        body = json.loads(text)
        assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.fixture
def tc(settings) -> Iterator[TestClient]:
    """One app for all the examples of a test (they must leave it serving)."""
    with TestClient(create_app(settings, engine=EchoEngine())) as c:
        yield c


@hsettings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_any_json_body_is_answered_without_a_5xx(tc, body, route):
    raw = json.dumps(body, allow_nan=True)
    r = tc.post(route, content=raw, headers={**auth(), "Content-Type": "application/json"})
    check(r.status_code, r.text)


@hsettings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_answered_without_a_5xx(tc, raw):
    r = tc.post("/v1/chat/completions", content=raw, headers=auth())
    check(r.status_code, r.text)


def test_still_serving_after_the_fuzz(tc):
    ok = tc.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        headers=auth(),
    )
    assert ok.status_code == 200
