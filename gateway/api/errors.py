"""Every error the app can raise, mapped to the OpenAI envelope in one place."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from gateway.api.wire import ONE_VALUE_ONLY
from gateway.errors import GatewayError, InternalError, InvalidRequestError, error_body

__all__ = [
    "ErrorResponse",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "validation_error",
]

log = logging.getLogger(__name__)


class ErrorObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The OpenAI error envelope (for the OpenAPI document; bodies are built by `error_body`)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorObject


_ERROR_DESCRIPTIONS = {
    400: "Bad input: an invalid body, parameter or value (never a 422)",
    401: "A missing or wrong key or token",
    403: "The key may not do this",
    404: "No such model, tune, tenant or key",
    409: "The resource is in use",
    413: "The request body is over the limit",
    429: "A rate or concurrency limit was reached (see Retry-After)",
    431: "Too many or too large request headers",
    500: "An unexpected error in the gateway",
    502: "The engine failed or gave an invalid answer",
    503: "The engine, the shared state or the gateway's capacity is unavailable (see Retry-After)",
    504: "A deadline passed (first token or whole answer)",
}
# What any route can answer: headers refused at the door, an unexpected error.
COMMON_ERRORS = (431, 500)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses (and `COMMON_ERRORS`), all the envelope."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in sorted({*statuses, *COMMON_ERRORS})
    }


_HTTP_TYPES = {
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
}


def error_response(exc: GatewayError) -> Response:
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


def _param_of(err: Any) -> str | None:
    """The parameter a pydantic error is about, as the 400 names it (`messages.0.role`)."""
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    # Drop pydantic's union-branch markers (e.g. `str`, `list[...]`) from the location.
    loc = [p for p in loc if not (p[:1].isalpha() and ("[" in p or p in {"str", "int"}))]
    # A check of the whole body names its parameter in the error's context.
    return ".".join(loc) or (err.get("ctx") or {}).get("param")


def validation_error(exc: ValidationError | RequestValidationError) -> InvalidRequestError:
    """The first pydantic error as a 400 naming the parameter; never FastAPI's 422 shape."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("The request body is invalid.")
    err = errors[0]
    if err.get("type") in ("json_invalid", "json_type"):
        return InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        )
    # A union (`str | list[str]`) reports each branch; the one the input's type matched (its
    # error is not a type error) says what is wrong: "at most 4 items", not "a valid string".
    param = _param_of(err)
    branches = (e for e in errors if _param_of(e) == param)
    err = next((e for e in branches if not e.get("type", "").endswith("_type")), err)
    if param in ONE_VALUE_ONLY:
        return InvalidRequestError(
            f"Unsupported value for '{param}': {ONE_VALUE_ONLY[param]}.",
            param=param,
            code="unsupported_value",
        )
    if err.get("type") == "refused_field":  # wire.py: a field this API never accepts
        return InvalidRequestError(f"{err.get('msg')}.", param=param, code="unsupported_parameter")
    if err.get("type") == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if param is None:
        return InvalidRequestError(f"Invalid request: {err.get('msg')}.", code="invalid_value")
    return InvalidRequestError(
        f"Invalid value for '{param}': {err.get('msg')}.", param=param, code="invalid_value"
    )


def _document_400(doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 for every route with parameters; the handler below answers 400 in
    the envelope instead, so the document says that."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": _ERROR_DESCRIPTIONS[400],
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                        }
                    },
                }
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if "ErrorResponse" not in schemas:
        envelope = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(envelope.pop("$defs"))
        schemas["ErrorResponse"] = envelope
    return doc


def _allowed_methods(request: Request) -> str:
    """Every method of every route at this path: Starlette's 405 names only the first route's
    (a path served by two routes, e.g. GET and POST, would say `Allow: GET`)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if (
            isinstance(route, Route)
            and route.methods
            and route.matches(request.scope)[0] != Match.NONE
        ):
            methods.update(route.methods)
    if "GET" in methods:  # `HeadAsGet` answers HEAD wherever GET is served
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_400(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        type_, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", None))
        body = error_body(str(exc.detail), type_, None, code)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return Response(
            orjson.dumps(body),
            status_code=exc.status_code,
            media_type="application/json",
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A backstop: `RequestIdMiddleware` answers unexpected errors inside it the same way.
        log.exception("unhandled error", extra={"request_id": request.state.request_id})
        return error_response(InternalError.unexpected())
