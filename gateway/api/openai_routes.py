"""OpenAI-compatible routes. Thin: parse, run the pipeline, render."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from gateway.api import render
from gateway.api.disconnect import ClientDisconnected, until_disconnect
from gateway.api.errors import validation_error
from gateway.api.event_stream import EventStream
from gateway.api.tracker import Tracker
from gateway.api.wire import ChatRequest, CompletionRequest
from gateway.engine import EngineRequest, Output
from gateway.errors import GatewayError
from gateway.ids import new_id
from gateway.limits import Admission
from gateway.postprocess import OutputPipeline
from gateway.service import Gateway, Resolved, Sampling, check_structured
from gateway.shared_state import Principal

__all__ = ["router"]

router = APIRouter()
M = TypeVar("M", bound=BaseModel)
CLIENT_CLOSED = 499
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _json(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _describe(t: Tracker, body: ChatRequest | CompletionRequest, operation: str) -> None:
    """The request's GenAI attributes for its span (only when tracing is on)."""
    if t.span_attrs is None:
        return
    attrs = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": body.model,
        "gen_ai.request.max_tokens": body.token_budget(),
        "gen_ai.request.temperature": body.temperature,
        "gen_ai.request.top_p": body.top_p,
        "gen_ai.request.seed": body.seed,
        "tunegate.stream": body.stream,
    }
    t.span_attrs.update({k: v for k, v in attrs.items() if v is not None})


def _responding(t: Tracker, response_id: str, model: str) -> None:
    if t.span_attrs is not None:
        t.span_attrs["gen_ai.response.id"] = response_id
        t.span_attrs["gen_ai.response.model"] = model


def _sampling(body: ChatRequest | CompletionRequest) -> Sampling:
    return Sampling(
        max_tokens=body.token_budget(),
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        structured=(
            body.response_format.structured()
            if isinstance(body, ChatRequest) and body.response_format
            else None
        ),
        logit_bias=body.bias(),
    )


async def _models_route(
    request: Request, answer: Callable[[Gateway, Principal], Awaitable[dict[str, Any]]]
) -> Response:
    """The models routes' frame: the key checked, `answer` built, one audit record either way."""
    gw = _gateway(request)
    t = Tracker(gw, "models", request.state.request_id)
    try:
        principal = await gw.authenticate(request.headers.get("authorization"))
        t.tenant, t.key_id = principal.tenant.name, principal.key_id
        body = await answer(gw, principal)
    except Exception as exc:
        _failed(t, exc)
        raise
    t.done(200)
    await t.durable()
    return _json(body)


@router.get("/v1/models", **render.MODELS_DOC)
async def list_models(request: Request) -> Response:
    async def listing(gw: Gateway, principal: Principal) -> dict[str, Any]:
        return render.models_body(gw.visible_models(principal), gw.created)

    return await _models_route(request, listing)


@router.get("/v1/models/{model:path}", **render.MODEL_DOC)
async def retrieve_model(request: Request, model: str) -> Response:
    """One model the caller may use: any name the completion routes accept from this key (the
    base model, a tune, `tune@version`, `default`); others, and tunes the tenant may not use,
    are the same 404 as there."""

    async def one(gw: Gateway, principal: Principal) -> dict[str, Any]:
        resolved = await gw.resolve(principal, model)
        parent = gw.base_model if resolved.tune is not None else None
        return render.model_body(model, parent, gw.created)

    return await _models_route(request, one)


def _failed(t: Tracker, exc: BaseException) -> None:
    """Audit a request that ends in an error (any error: a 500 is recorded too)."""
    if isinstance(exc, GatewayError):
        t.done(exc.status, code=exc.code)
    elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        t.done(CLIENT_CLOSED, code="client_closed")
    else:
        t.done(500, code="internal_error")


@router.post("/v1/chat/completions", **render.CHAT_DOC)
async def chat_completions(request: Request) -> Response:
    gw = _gateway(request)
    t = Tracker(gw, "chat", request.state.request_id)
    try:
        principal = await gw.authenticate(request.headers.get("authorization"))
        t.tenant, t.key_id = principal.tenant.name, principal.key_id
        body = _parse(ChatRequest, await request.body())
        _describe(t, body, "chat")
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        contents = [m["content"] for m in messages]
        gw.check_policy(principal, body.model_fields_set, contents, "messages")
        await t.keep_prompt(principal.tenant.audit_content, "\n".join(contents))
        texts = await gw.scan_input(principal, contents, "messages", t.findings)
        messages = [{**m, "content": text} for m, text in zip(messages, texts, strict=True)]
        resolved = await gw.resolve(principal, body.model, body.user)
        t.tune = resolved.label
        t.version = resolved.tune.version if resolved.tune else None
        prompt = resolved.tune.system_prompt if resolved.tune else None
        if prompt and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": prompt}, *messages]  # the tune's default
        rid = f"chatcmpl-{new_id()}"
        _responding(t, rid, resolved.model)
        ereq = await gw.prepare_chat(rid, principal, resolved, messages, _sampling(body))
        admission = gw.admit_early(principal, ereq) or await gw.admit(principal, ereq)
    except BaseException as exc:
        _failed(t, exc)
        raise
    usage = bool(body.stream_options and body.stream_options.include_usage)
    post = gw.output_pipeline(principal, resolved, structured=ereq.structured is not None)
    return await _answer(
        request, gw, t, admission, ereq, resolved, body.stream, usage, chat=True, post=post
    )


@router.post("/v1/completions", **render.COMPLETION_DOC)
async def completions(request: Request) -> Response:
    gw = _gateway(request)
    t = Tracker(gw, "completions", request.state.request_id)
    try:
        principal = await gw.authenticate(request.headers.get("authorization"))
        t.tenant, t.key_id = principal.tenant.name, principal.key_id
        body = _parse(CompletionRequest, await request.body())
        _describe(t, body, "text_completion")
        text = body.prompt_text()
        gw.check_policy(principal, body.model_fields_set, [text], "prompt")
        await t.keep_prompt(principal.tenant.audit_content, text)
        (prompt,) = await gw.scan_input(principal, [text], "prompt", t.findings)
        resolved = await gw.resolve(principal, body.model, body.user)
        t.tune = resolved.label
        t.version = resolved.tune.version if resolved.tune else None
        rid = f"cmpl-{new_id()}"
        _responding(t, rid, resolved.model)
        ereq = await gw.prepare_completion(rid, principal, resolved, prompt, _sampling(body))
        admission = gw.admit_early(principal, ereq) or await gw.admit(principal, ereq)
    except BaseException as exc:
        _failed(t, exc)
        raise
    usage = bool(body.stream_options and body.stream_options.include_usage)
    post = gw.output_pipeline(principal, resolved, structured=ereq.structured is not None)
    return await _answer(
        request, gw, t, admission, ereq, resolved, body.stream, usage, chat=False, post=post
    )


async def _answer(
    request: Request,
    gw: Gateway,
    t: Tracker,
    admitting: Admission | asyncio.Task[Admission],
    ereq: EngineRequest,
    resolved: Resolved,
    stream: bool,
    include_usage: bool,
    *,
    chat: bool,
    post: OutputPipeline,
) -> Response:
    created = int(time.time())
    post.findings = t.findings  # one list: input findings first, output findings added
    # Started early (`Gateway.admit_early`): the engine works while the admission is decided.
    admission, early = (admitting, None) if isinstance(admitting, Admission) else (None, admitting)
    if early is not None and t.span_attrs is not None:
        t.span_attrs["tunegate.early_start"] = True
    try:
        if not stream:
            completing = asyncio.ensure_future(gw.complete(ereq, post))
            if early is not None:
                admission = await _admitted(early, completing)
            c = await until_disconnect(request.receive, completing)
            t.first_token()
            t.tokens(c.prompt_tokens, c.completion_tokens)
            t.answer_text = c.text
            t.done(200, finish_reason=c.finish_reason)
            # The slot and unused tokens go back while the audit record commits: two waits at once.
            release = asyncio.ensure_future(admission.finish(c.prompt_tokens + c.completion_tokens))
            try:
                await t.durable()  # a 2xx goes out only once its audit record is committed
            finally:
                await release
            make = render.chat_body if chat else render.completion_body
            return _json(make(ereq.request_id, created, resolved.model, c), admission.headers)
        outputs = gw.stream(ereq).__aiter__()
        # Wait for the first output before sending headers, so early failures get a status.
        starting = asyncio.ensure_future(
            _first_output(outputs, min(gw.first_token_timeout_s, gw.request_timeout_s))
        )
        try:
            if early is not None:
                admission = await _admitted(early, starting)
            first = await until_disconnect(request.receive, starting)
        except BaseException as exc:
            # Refused, timed out or gone: close the stream (a task still running was
            # cancelled, and the cancellation closes it).
            if starting.done():
                await outputs.aclose()  # type: ignore[attr-defined]
            if isinstance(exc, TimeoutError):
                raise gw.deadline_error(first=True) from None
            raise
    except ClientDisconnected:
        if admission is not None:
            await admission.finish(None)
        t.done(CLIENT_CLOSED, code="client_closed")
        return Response(status_code=CLIENT_CLOSED)
    except BaseException as exc:
        if admission is not None:
            await admission.finish(None)
            if isinstance(exc, GatewayError):
                exc.headers = {**admission.headers, **exc.headers}
        _failed(t, exc)
        raise
    t.first_token()
    events = _events(
        t,
        admission,
        outputs,
        first,
        ereq,
        created,
        resolved.model,
        include_usage,
        chat,
        post,
    )
    release = admission.finish
    return EventStream(  # releases the admission however the response ends, even if unstarted
        events, {**SSE_HEADERS, **admission.headers}, on_close=lambda: release(None)
    )


async def _first_output(outputs: AsyncIterator[Output], timeout_s: float) -> Output:
    async with asyncio.timeout(timeout_s):
        return await anext(outputs)


async def _admitted(admitting: asyncio.Task[Admission], work: asyncio.Future[Any]) -> Admission:
    """The admission of a request that started early; refused (or failed), its work is
    cancelled (the engine request aborted) before the refusal goes on."""
    try:
        return await admitting
    except BaseException:
        admitting.cancel()  # the caller went away: the limiter gives back what it grants
        work.cancel()
        await asyncio.wait([work])
        if not work.cancelled():
            work.exception()  # it failed on its own before the refusal: the refusal is the answer
        raise


async def _events(
    t: Tracker,
    admission: Admission,
    outputs: AsyncIterator[Output],
    first: Output,
    ereq: EngineRequest,
    created: int,
    model: str,
    include_usage: bool,
    chat: bool,
    post: OutputPipeline,
) -> AsyncIterator[bytes]:
    rid = ereq.request_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t.gw.request_timeout_s - (time.perf_counter() - t.start)
    chunk: Callable[[str, str | None], dict[str, Any]]
    if chat:

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            delta = {"content": text} if text else {}
            return render.chat_chunk(rid, created, model, delta, finish)

        # The assistant's role first, in the same write as the first text when there is some.
        opening = render.sse(
            render.chat_chunk(rid, created, model, {"role": "assistant", "content": ""}, None)
        )
    else:
        opening = b""

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return render.completion_chunk(rid, created, model, text, finish)

    last = first
    finish: str | None = None
    sent: list[str] = []
    try:
        out: Output | None = first
        while out is not None:
            last = out
            step = post.feed(out.text)
            if step.emit:
                sent.append(step.emit)
                yield opening + render.sse(chunk(step.emit, None))
                opening = b""
                t.chunk_sent()
            elif opening:  # nothing to show yet (held back by output rules): the role now
                yield opening
                opening = b""
            if step.finish_reason is not None:
                finish = step.finish_reason  # post-processing ended the answer: stop the engine
                await outputs.aclose()  # type: ignore[attr-defined]
                break
            if out.finish_reason is not None:
                break
            try:  # a timer, not `wait_for`: that would run each wait in a task of its own
                async with asyncio.timeout_at(deadline):
                    out = await anext(outputs, None)
            except TimeoutError:
                await outputs.aclose()  # type: ignore[attr-defined]
                raise t.gw.deadline_error(first=False) from None
        if finish is None:
            if last.finish_reason is None:
                raise GatewayError("The engine ended the stream without finishing.")
            with t.gw.stage("postprocess"):
                step = post.finish()
                finish = step.finish_reason or last.finish_reason
                if step.emit:
                    sent.append(step.emit)
                check_structured(ereq, "".join(sent), finish)
            if step.emit:
                yield render.sse(chunk(step.emit, None))
        yield render.sse(chunk("", finish))
        if include_usage:
            payload = chunk("", None)
            payload["choices"] = []
            payload["usage"] = render.usage(last.prompt_tokens, last.completion_tokens)
            yield render.sse(payload)
        t.tokens(last.prompt_tokens, last.completion_tokens)
        t.answer_text = "".join(sent)
        t.done(200, finish_reason=finish)
        await t.durable()  # `[DONE]` goes out only once the audit record is committed
        yield render.DONE
    except GatewayError as exc:
        t.tokens(last.prompt_tokens, last.completion_tokens)
        t.done(exc.status, code=exc.code)
        yield render.sse_error(exc)
    except BaseException as exc:
        t.tokens(last.prompt_tokens, last.completion_tokens)
        _failed(t, exc)
        raise
    finally:
        try:  # the engine's stream ends now, not when the collector finds it
            await outputs.aclose()  # type: ignore[attr-defined]
        finally:
            await admission.finish(last.prompt_tokens + last.completion_tokens)
