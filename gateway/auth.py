"""API-key authentication: bearer key -> SHA-256 -> Principal. Keys are never stored in clear."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from gateway.errors import AuthenticationError

__all__ = ["bearer_token", "check_admin", "hash_key", "new_key"]

KEY_PREFIX = "tg-"


def hash_key(key: str) -> str:
    """Hex SHA-256 of an API key: what policies and stores hold instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (shown once; only its hash is kept)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(header: str | None) -> str:
    if not header:
        raise AuthenticationError(
            "You didn't provide an API key. Provide it in the Authorization header "
            "(Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("The Authorization header must be `Bearer YOUR_KEY`.")
    return token


def check_admin(expected: str | None, header: str | None) -> None:
    """Admin routes take the admin token only, never a tenant key."""
    if expected is None:
        raise AuthenticationError(
            "The admin API is disabled: set TUNEGATE_ADMIN_TOKEN to enable it.",
            code="admin_disabled",
        )
    token = bearer_token(header)
    if not hmac.compare_digest(hash_key(token), hash_key(expected)):
        raise AuthenticationError("Incorrect admin token provided.")
