"""Every error the app can raise, mapped to the OpenAI envelope in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from gateway.errors import GatewayError, InvalidRequestError, error_body

__all__ = ["error_response", "install_error_handlers", "validation_error"]

import orjson

log = logging.getLogger(__name__)

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
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    # Drop pydantic's union-branch markers (e.g. `str`, `list[...]`) from the location.
    loc = [p for p in loc if not (p[:1].isalpha() and ("[" in p or p in {"str", "int"}))]
    param = ".".join(loc) or None
    if err.get("type") == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return InvalidRequestError(
        f"Invalid value for '{param}': {err.get('msg')}.", param=param, code="invalid_value"
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        type_, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", None))
        body = error_body(str(exc.detail), type_, None, code)
        return Response(
            orjson.dumps(body),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": request.state.request_id})
        body = error_body(
            "The server had an error processing your request.",
            "server_error",
            None,
            "internal_error",
        )
        return Response(orjson.dumps(body), status_code=500, media_type="application/json")
