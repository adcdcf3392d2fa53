"""Typed gateway errors and their single mapping to the OpenAI error envelope."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "ClientError",
    "ContextLengthError",
    "EngineUnavailableError",
    "GatewayError",
    "InternalError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ServerError",
    "error_body",
]


class GatewayError(Exception):
    """Base of every error the gateway answers with an OpenAI envelope."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


class ClientError(GatewayError):
    """4xx: the request is at fault."""

    status = 400
    type = "invalid_request_error"


class ServerError(GatewayError):
    """5xx: the gateway or the engine is at fault."""

    status = 500
    type = "server_error"


class InvalidRequestError(ClientError):
    status = 400


class ContextLengthError(ClientError):
    status = 400
    default_code = "context_length_exceeded"


class AuthenticationError(ClientError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ClientError):
    status = 403
    type = "permission_error"


class NotFoundError(ClientError):
    status = 404
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )


class PayloadTooLargeError(ClientError):
    status = 413
    default_code = "request_too_large"


class HeadersTooLargeError(ClientError):
    status = 431
    default_code = "request_headers_too_large"


class EngineUnavailableError(ServerError):
    status = 503
    type = "service_unavailable_error"
    default_code = "engine_unavailable"


class OverloadedError(EngineUnavailableError):
    """The gateway is at its bound of requests in flight: a fast 503, nothing queued."""

    default_code = "overloaded"


class ShuttingDownError(EngineUnavailableError):
    """The gateway is draining before it stops: new requests go elsewhere."""

    default_code = "shutting_down"


class DeadlineError(ServerError):
    """A deadline (first token or whole request) passed; the engine's work was cancelled."""

    status = 504
    type = "timeout_error"
    default_code = "deadline_exceeded"


class InternalError(ServerError):
    status = 500
    default_code = "internal_error"

    @classmethod
    def unexpected(cls) -> InternalError:
        """What an unexpected error is answered with: never its own message."""
        return cls("The server had an error processing your request.")


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope; `code` is a string or null."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
