"""Key hashing, authentication and the error envelope."""

from __future__ import annotations

import hashlib

import pytest

from gateway.auth import bearer_token, check_admin, hash_key, new_key
from gateway.errors import (
    AuthenticationError,
    ContextLengthError,
    EngineUnavailableError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
)


def test_hash_key_is_sha256_hex():
    assert hash_key("tg-abc") == hashlib.sha256(b"tg-abc").hexdigest()


def test_new_keys_are_random_and_prefixed():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("tg-") and len(a) > 40


def test_bearer_token_missing_code():
    with pytest.raises(AuthenticationError) as info:
        bearer_token(None)
    assert info.value.code == "missing_api_key"


def test_admin_token_check():
    check_admin("root-token", "Bearer root-token")
    with pytest.raises(AuthenticationError):
        check_admin("root-token", "Bearer good")
    with pytest.raises(AuthenticationError) as info:
        check_admin(None, "Bearer anything")
    assert info.value.code == "admin_disabled"


@pytest.mark.parametrize(
    "exc,status,type_,code",
    [
        (InvalidRequestError("m", param="p"), 400, "invalid_request_error", None),
        (ContextLengthError("m"), 400, "invalid_request_error", "context_length_exceeded"),
        (AuthenticationError("m"), 401, "authentication_error", "invalid_api_key"),
        (ModelNotFoundError("x"), 404, "invalid_request_error", "model_not_found"),
        (PayloadTooLargeError("m"), 413, "invalid_request_error", "request_too_large"),
        (EngineUnavailableError("m"), 503, "service_unavailable_error", "engine_unavailable"),
    ],
)
def test_error_envelope(exc: GatewayError, status, type_, code, validate_schema):
    body = exc.body()
    assert exc.status == status
    assert body["error"]["type"] == type_ and body["error"]["code"] == code
    assert set(body["error"]) == {"message", "type", "param", "code"}
    validate_schema("ErrorResponse", body)
