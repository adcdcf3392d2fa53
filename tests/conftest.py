"""Shared fixtures: the official OpenAI schema as a validator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "reference" / "openai-openapi.yaml"


def _nullable_to_anyof(node: Any) -> Any:
    """OpenAPI's `nullable: true` (used inside this 3.1 file) means 'or null'."""
    if isinstance(node, dict):
        node = {k: _nullable_to_anyof(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_anyof(v) for v in node]
    return node


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    if not SPEC.is_file():
        pytest.fail(f"the official OpenAI spec is missing at {SPEC}")
    with SPEC.open() as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="session")
def validate_schema(openapi_spec: dict[str, Any]) -> Callable[[str, Any], None]:
    """validate_schema("CreateChatCompletionResponse", body) raises if the body does not conform."""
    doc = _nullable_to_anyof(copy.deepcopy(openapi_spec))
    registry = Registry().with_resource("urn:openai", Resource.opaque(doc))
    validators: dict[str, Draft202012Validator] = {}

    def validate(component: str, body: Any) -> None:
        if component not in validators:
            schema = {"$ref": f"urn:openai#/components/schemas/{component}"}
            validators[component] = Draft202012Validator(schema, registry=registry)
        errors = sorted(validators[component].iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{component} invalid: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
        )

    return validate


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server for the whole session (tests that restart it restart it again)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def demo_build() -> Path:
    """The demo base model and tunes (built once, cached in build/demo by their input hash)."""
    from gateway.tunebuild.demo import ensure_demo_build

    build = ROOT / "build" / "demo"
    ensure_demo_build(build)
    return build
