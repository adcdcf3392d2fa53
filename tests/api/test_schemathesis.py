"""Schemathesis against the gateway's own OpenAPI document, in process over ASGI (no network).

- With a tenant key (the /v1 routes) or the admin token (/admin), or no key (health, metrics):
  no 5xx, every status code and content type is documented, every body (JSON, each event of a
  stream, every error envelope) conforms to its documented schema, and data the document calls
  invalid is refused with a 4xx (never FastAPI's 422).
- Without a key, with a wrong one, or with the other API's credential: every operation that takes
  a key answers 401 in the envelope, never a 2xx or a 5xx.

Bounded and reproducible: a few dozen derandomized examples per operation, no example database.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

from gateway.api import create_app
from gateway.engine import EngineRequest, Output
from tests.api.conftest import ADMIN, KEYS, EchoEngine, write_config

OPEN = ("/healthz", "/readyz", "/metrics")
BODY_LIMIT = 4096  # conftest's `max_body_bytes`

VERSIONS = """name: support
base_model: test-base
versions:
  - {version: "1", adapter_path: adapter, rank: 8, status: live}
  - {version: "2", adapter_path: adapter, rank: 8, status: draft}
  - {version: "0", adapter_path: adapter, rank: 8, status: retired}
"""


class JsonEcho(EchoEngine):
    """The echo double, answering `{}` where the request asks for JSON, as a real engine's
    structured output would (the echo itself is no JSON: every such answer would be a 502)."""

    async def stream(self, request: EngineRequest) -> AsyncIterator[Output]:
        if request.structured is None:
            async for out in super().stream(request):
                yield out
            return
        self.requests.append(request)
        yield Output("{}", 1, len(request.prompt_token_ids), "stop")


_root = Path(tempfile.mkdtemp(prefix="tunegate-schemathesis-"))
atexit.register(shutil.rmtree, _root, ignore_errors=True)


def _app(name: str) -> Any:
    """A fresh app (its own config and engine double) per run, so one run's admin changes or
    rate counters never leak into another's."""
    root = _root / name
    root.mkdir()
    settings = write_config(root)
    (settings.tunes_dir / "support" / "tune.yaml").write_text(VERSIONS)
    return create_app(settings, engine=JsonEcho())


# What `call_and_validate` checks. Off: `positive_data_acceptance` (the models' validators check
# more than a JSON schema can say, e.g. a chat with only blank messages is a 400) and the checks
# that need stateful runs.
CHECKS = {
    "not_a_server_error": True,
    "status_code_conformance": True,
    "content_type_conformance": True,
    "response_headers_conformance": True,
    "response_schema_conformance": True,
    "negative_data_rejection": True,
    "ignored_auth": True,  # a 2xx with credentials is tried again without: must be a 401
    "missing_required_header": True,
    "unsupported_method": True,  # coverage phase: other methods get a 405 ...
    "allow_header_conformance": True,  # ... whose `Allow` names the documented ones
    "positive_data_acceptance": False,
    "use_after_free": False,
    "ensure_resource_availability": False,
    "object_level_authorization": False,
}


def _schema(app: Any, *, coverage: bool = True) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "all", "database": "none", "deterministic": True},
            "phases": {
                "examples": {"enabled": False},
                # Boundary values and other methods, beside the random cases.
                "coverage": {"enabled": coverage},
                "stateful": {"enabled": False},
            },
            "checks": {
                **{name: {"enabled": on} for name, on in CHECKS.items()},
                # Invalid data is refused with the envelope's statuses (a body over the limit
                # at the door), never with a 422.
                "negative_data_rejection": {"expected-statuses": [400, 401, 404, 409, 413, 431]},
            },
        }
    )
    schema = schemathesis.openapi.from_dict(app.openapi(), config=config)
    schema.app = app  # requests go to the app in process; its lifespan runs on the first one
    return schema


SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

api_app, admin_app, refusing_app = _app("api"), _app("admin"), _app("refusing")
api = _schema(api_app).include(path_regex=r"^/(v1/|healthz$|readyz$|metrics$)")
admin = _schema(admin_app).include(path_regex=r"^/admin/")
# The key is checked before the body is read: random cases are enough there.
refusing = _schema(refusing_app, coverage=False).exclude(path=list(OPEN))

# Names that exist in this config. Random strings are nearly never one of them, so valid cases
# name one often (and keep their own otherwise): the answers for real models, tenants, tunes,
# versions and keys get fuzzed too, not only their 404s; and half the answers are streamed.
STEER_BODY = {
    "model": ["legal", "support", "support@2", "extract", "test-base", "default"],
    "version": ["1", "2", "0"],
}
# Added to a generation request (a body with a `model`) as often as not.
STEER_STREAM = {"stream": [True, False], "stream_options": [{"include_usage": True}]}
TUNES, TENANTS = ["legal", "support", "extract"], list(KEYS)
STEER_PATH = {
    "key_id": [f"{t}-1" for t in TENANTS],
    "model": ["legal", "support", "support@1", "test-base", "default"],
}
_KEEP = object()


def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return st.just(case)  # invalid data stays invalid
    body = case.body if isinstance(case.body, dict) else {}
    path = case.path_parameters or {}
    steer_path = {**STEER_PATH, "name": TUNES if "/tunes/" in case.path else TENANTS}
    steer_body = {
        **{k: v for k, v in STEER_BODY.items() if isinstance(body.get(k), type(v[0]))},
        **(STEER_STREAM if isinstance(body.get("model"), str) else {}),
    }
    picks = {
        **{("body", k): st.sampled_from([*v, _KEEP]) for k, v in steer_body.items()},
        **{("path", k): st.sampled_from([*v, _KEEP]) for k, v in steer_path.items() if k in path},
    }

    def steer(picked: dict[tuple[str, str], Any]) -> Any:
        for (where, k), value in picked.items():
            if value is _KEEP:
                continue
            if where == "body":
                case.body = {**case.body, k: value}
            else:
                case.path_parameters = {**case.path_parameters, k: value}
        return case

    return st.fixed_dictionaries(picks).map(steer)


api.hook(flatmap_case)
admin.hook(flatmap_case)


def _never_422(response: Any) -> None:
    assert response.status_code != 422, response.text
    if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@api.parametrize()
@settings(SETTINGS, max_examples=50)
def test_api_conforms_with_a_tenant_key(case: Any) -> None:
    headers = {} if case.path in OPEN else {"Authorization": f"Bearer {KEYS['acme']}"}
    response = case.call(headers=headers)
    excluded = []
    if _schema_unmet(case, response):
        excluded.append(not_a_server_error)
    case.validate_response(response, headers=headers, excluded_checks=excluded)
    _never_422(response)


def _schema_unmet(case: Any, response: Any) -> bool:
    """A 502 `output_invalid` is the right answer where the double's `{}` does not match the
    `json_schema` the request gave (a real engine is constrained to it)."""
    if response.status_code != 502 or not isinstance(case.body, dict):
        return False
    fmt = case.body.get("response_format")
    return (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and response.json()["error"]["code"] == "output_invalid"
    )


@admin.parametrize()
@SETTINGS
def test_admin_api_conforms_with_the_admin_token(case: Any) -> None:
    _never_422(case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}))


WRONG = [
    {},
    {"Authorization": "Bearer tg-not-a-key"},
    {"Authorization": f"Basic {KEYS['acme']}"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer"},
]


@refusing.parametrize()
@settings(SETTINGS, max_examples=10)
def test_without_a_valid_key_every_operation_answers_401(case: Any) -> None:
    # The other API's credential is as wrong as none: a tenant key never opens /admin, the
    # admin token is no tenant key.
    other = ADMIN if case.path.startswith("/v1/") else KEYS["acme"]
    for headers in [*WRONG, {"Authorization": f"Bearer {other}"}]:
        response = case.call(headers=headers)
        if response.status_code == 413:  # refused at the door, before the key is read
            assert len(response.request.body or b"") > BODY_LIMIT
            continue
        assert response.status_code == 401, (headers, response.status_code, response.text)
        error = response.json()["error"]
        assert error["type"] == "authentication_error", error
        assert set(error) == {"message", "type", "param", "code"}


async def test_the_served_document_is_the_one_fuzzed() -> None:
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc == api_app.openapi()
    ops = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert {("post", "/v1/chat/completions"), ("post", "/v1/completions")} <= ops
    assert ("get", "/v1/models") in ops
    # Every operation documents its answer and its errors; none documents FastAPI's 422.
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            assert any(s.startswith("2") for s in op["responses"]), (method, path)
            if path not in OPEN:
                assert "401" in op["responses"], (method, path)
    for path in ("/v1/chat/completions", "/v1/completions"):
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["required"]
        assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_a_405_names_every_method_of_the_path(client) -> None:
    # Two routes serve /admin/tenants/{name}/keys; Starlette's own 405 named only the first.
    r = await client.request(
        "OPTIONS", "/admin/tenants/acme/keys", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert r.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}
    assert r.json()["error"]["code"] == "method_not_allowed"


async def test_a_broken_manifest_is_a_400_when_loading_not_a_500(client, settings) -> None:
    (settings.tunes_dir / "legal" / "tune.yaml").write_text("name: legal\nrank: [\n")
    r = await client.post("/admin/tunes/legal/load", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_manifest"


@pytest.fixture(scope="module", autouse=True)
def _stop_lifespans() -> Any:
    yield
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()
