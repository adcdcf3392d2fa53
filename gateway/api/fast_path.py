"""The two completion routes, dispatched straight from the gateway's own middleware.

A request on FastAPI's path runs through its exception middleware, exit stacks, router and
request-response wrappers before the route function, and every time the request waits (for the
store, the engine, each streamed chunk) the event loop resumes it back through all of those
frames. For `POST /v1/chat/completions` and `POST /v1/completions` none of that does anything:
the routes take the raw request, have no dependencies and no path parameters. This middleware,
the innermost of the gateway's own, calls them directly and sends what they return.

Everything else goes on to FastAPI unchanged, including other methods on these paths (405 with
`Allow`) and the OpenAPI document, which still describes both routes from their FastAPI
definitions. Errors are answered the same way: a `GatewayError` becomes its envelope here, as
the app's handler would; anything unexpected propagates to `RequestIdMiddleware`, which logs it
and answers the 500 envelope, as it does for every route.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.api.errors import error_response
from gateway.api.openai_routes import chat_completions, completions
from gateway.errors import GatewayError

__all__ = ["CompletionFastPath"]

ROUTES = {"/v1/chat/completions": chat_completions, "/v1/completions": completions}


class CompletionFastPath:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        response: Response
        try:
            response = await handler(Request(scope, receive, send))
        except GatewayError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
