"""The request pipeline: authenticate, apply policy, resolve the tune, admit, generate."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.audit import AuditSink
from gateway.catalogue import Tune, TuneCatalogue
from gateway.engine import Adapter, Engine, EngineRequest, Output
from gateway.errors import (
    ContextLengthError,
    DeadlineError,
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    ServerError,
)
from gateway.limits import Admission, Limiter
from gateway.observability import Metrics
from gateway.observability.tracing import Tracing
from gateway.policy_checks import check_request
from gateway.postprocess import OutputPipeline
from gateway.safety import sliced
from gateway.shared_state import Principal, SharedState
from gateway.tune_validation import BaseModelInfo

__all__ = ["Completion", "Gateway", "Resolved", "Sampling", "adapter_of"]

DEFAULT_MODEL = "default"


class OutputInvalidError(ServerError):
    status = 502
    default_code = "output_invalid"


def check_structured(request: EngineRequest, text: str, finish: str) -> None:
    """Structured answers are validated after generation (a cut-off answer is left as it is)."""
    if request.structured is None or finish != "stop":
        return
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise OutputInvalidError("The model's answer was not valid JSON.") from None
    schema = request.structured.get("json")
    if schema is not None:
        from jsonschema import Draft202012Validator

        error = next(Draft202012Validator(schema).iter_errors(value), None)
        if error is not None:
            raise OutputInvalidError(
                f"The model's answer did not match the schema ({error.message[:200]})."
            )


class TuneInUseError(InvalidRequestError):
    status = 409
    default_code = "tune_in_use"


class ContentPolicyError(InvalidRequestError):
    """Input refused by a safety rule; carries the rule id (never the matched text)."""

    def __init__(self, message: str, *, rule: str, **kw: str) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Resolved:
    """The model a request runs on: the base (tune is None) or one catalogued tune."""

    model: str
    tune: Tune | None

    @property
    def label(self) -> str:
        return self.tune.name if self.tune else "base"


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: tuple[str, ...]
    seed: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    structured: dict[str, Any] | None = None
    logit_bias: dict[int, float] | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _cache_salt(tenant: str) -> str:
    """The prefix-cache salt of a tenant: the same on every replica, never client-chosen."""
    return hashlib.sha256(f"tunegate-prefix-cache:{tenant}".encode()).hexdigest()[:32]


def _tune_version(adapter: Adapter) -> tuple[str, str]:
    """Metric labels of an adapter named `name@version` on the engine."""
    name, _, version = adapter.name.partition("@")
    return name, version


def adapter_of(tune: Tune) -> Adapter:
    return Adapter(name=tune.key, adapter_id=tune.adapter_id, path=tune.adapter_path)


class Gateway:
    """Everything a route needs, built once by the app factory and passed down."""

    def __init__(
        self,
        catalogue: TuneCatalogue,
        state: SharedState,
        limiter: Limiter,
        engine: Engine,
        metrics: Metrics,
        audit: AuditSink,
        base_info: BaseModelInfo | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.audit = audit
        self.tracing = tracing or Tracing()
        self.catalogue = catalogue
        self.state = state
        self.limiter = limiter
        self.engine = engine
        self.metrics = metrics
        self.base_model = catalogue.base_model
        self.created = int(time.time())
        self.engine_failure: str | None = None
        self.base_info = base_info
        self._validated: set[int] = set()
        self.inflight: Counter[str] = Counter()
        self.active = 0  # admitted requests not yet finished
        self.entered = 0  # completion requests inside the app (InflightGate)
        self.draining = False  # SIGTERM came: finish what is in flight, take nothing new
        self.max_inflight = 512
        self.first_token_timeout_s = 60.0
        self.request_timeout_s = 600.0
        evictions = metrics.adapter_evictions
        engine.on_evict = lambda adapter: evictions.labels(*_tune_version(adapter), "lru").inc()
        engine.on_load = self._loaded_adapter
        if hasattr(engine, "on_route"):  # the engine pool
            routes, retries = metrics.pool_routes, metrics.pool_retries
            engine.on_route = lambda server, affinity: metrics.child(routes, server, affinity).inc()
            engine.on_retry = lambda reason: retries.labels(reason.split(":")[0]).inc()
        for tune in catalogue.all_versions():  # zero series now, so alerts see the first one
            metrics.adapter_loads.labels(tune.name, tune.version, "error")

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Time a pipeline stage: a metric always, a span or span attribute when tracing is on."""
        return self.tracing.stage(name, self.metrics.child(self.metrics.stage_duration, name))

    async def authenticate(self, header: str | None) -> Principal:
        with self.stage("auth"):
            return await self.state.authenticate(header)

    def check_policy(
        self, principal: Principal, fields_set: Iterable[str], texts: list[str], field: str
    ) -> None:
        with self.stage("policy"):
            try:
                check_request(principal.tenant, fields_set, texts, field)
            except Exception as exc:
                self.metrics.policy_denials.labels(
                    principal.tenant.name, getattr(exc, "code", None) or "other"
                ).inc()
                raise
        if self.engine.ready:  # what cannot fit is refused before it is scanned or tokenized
            self._surely_too_long(principal, sum(map(len, texts)), field)

    async def resolve(self, principal: Principal, model: str, user: str | None = None) -> Resolved:
        """Model name -> base or a tune version; forbidden and unknown look the same (404).

        `name@version` picks a version; a plain name follows the live version, or the canary
        for its share of end users (sticky: the request's `user`, else the key).
        """
        with self.stage("resolve"):
            tenant = principal.tenant
            name, _, version = model.partition("@")
            if model == DEFAULT_MODEL:
                name = await self.state.binding(tenant) or self.base_model
            if name == self.base_model and not version:
                return Resolved(self.base_model, None)
            tune = None
            if name in tenant.tunes:
                if version:
                    tune = self.catalogue.get_version(name, version)
                    tune = tune if tune is not None and tune.status != "retired" else None
                else:
                    tune = await self.pick_version(name, user or principal.key_id)
            if tune is None:
                raise ModelNotFoundError(model)
            return Resolved(model if version else tune.name, tune)

    async def pick_version(self, name: str, sticky: str) -> Tune | None:
        rollout = await self.state.rollout(name)
        if rollout is None:
            return self.catalogue.get(name)
        if rollout.canary and rollout.weight > 0:
            bucket = (
                int.from_bytes(hashlib.sha256(f"{name}:{sticky}".encode()).digest()[:4], "big")
                % 100
            )
            if bucket < rollout.weight:
                canary = self.catalogue.get_version(name, rollout.canary)
                if canary is not None:
                    return canary
        return self.catalogue.get_version(name, rollout.live) or self.catalogue.get(name)

    def output_pipeline(
        self, principal: Principal, resolved: Resolved, *, structured: bool = False
    ) -> OutputPipeline:
        """Output safety from the tenant; the format profile from the tune, tenant on top.

        A structured (JSON) answer keeps its text as generated: no disclaimer, no whitespace
        rewriting, which would break the JSON; safety rules still apply.
        """
        tenant = principal.tenant
        tune_profile = resolved.tune.format if resolved.tune else None
        profile = tune_profile.merged(tenant.format) if tune_profile else tenant.format
        if structured and profile is not None:
            profile = profile.model_copy(update={"disclaimer": None, "normalize_whitespace": False})
        m = self.metrics
        return OutputPipeline(
            rules=tenant.safety_output,
            profile=profile,
            on_finding=lambda rule, action: m.child(m.safety_findings, rule, action).inc(),
        )

    async def scan_input(
        self, principal: Principal, texts: list[str], field: str, findings: list[str]
    ) -> list[str]:
        """Input safety: block (400), redact (the engine sees the redacted text) or flag. Long
        input is scanned in slices, with the event loop let run between them."""
        rules = principal.tenant.safety_input
        if rules is None:
            return texts
        out = []
        unyielded = 0  # characters scanned since the event loop last ran
        with self.stage("input_safety"):
            for text in texts:
                if unyielded > sliced.SLICE_CHARS:  # many messages, each short
                    await asyncio.sleep(0)
                    unyielded = 0
                unyielded += len(text)
                result = await sliced.scan_in_slices(text, rules)
                for finding in result.findings:
                    self.metrics.child(
                        self.metrics.safety_findings, finding.rule_id, finding.action
                    ).inc()
                    if finding.rule_id not in findings:
                        findings.append(finding.rule_id)
                if result.blocked:
                    raise ContentPolicyError(
                        f"The input was blocked by safety rule `{result.blocking_rule}`.",
                        param=field,
                        code="content_policy_violation",
                        rule=result.blocking_rule or "",
                    )
                out.append(result.text)
        return out

    def visible_models(self, principal: Principal) -> list[tuple[str, str | None]]:
        """(id, parent) for the base model and each tune the tenant may use."""
        tunes = [t for t in self.catalogue if t.name in principal.tenant.tunes]
        return [(self.base_model, None)] + [(t.name, self.base_model) for t in tunes]

    def _check_ready(self) -> None:
        if not self.engine.ready:
            raise EngineUnavailableError(
                "The engine is not ready yet; try again shortly.", headers={"Retry-After": "5"}
            )

    async def prepare_chat(
        self,
        request_id: str,
        principal: Principal,
        resolved: Resolved,
        messages: list[dict[str, str]],
        s: Sampling,
    ) -> EngineRequest:
        self._check_ready()
        with self.stage("prepare"):
            self._surely_too_long(principal, sum(len(m["content"]) for m in messages), "messages")
            ids = await self.engine.tokenize_chat(messages)
            return self._engine_request(request_id, principal, resolved, ids, s, "messages")

    async def prepare_completion(
        self, request_id: str, principal: Principal, resolved: Resolved, prompt: str, s: Sampling
    ) -> EngineRequest:
        self._check_ready()
        with self.stage("prepare"):
            self._surely_too_long(principal, len(prompt), "prompt")
            ids = await self.engine.tokenize(prompt)
            return self._engine_request(request_id, principal, resolved, ids, s, "prompt")

    def _surely_too_long(self, principal: Principal, chars: int, field: str) -> None:
        """Refuse a prompt that cannot fit before spending time tokenizing all of it."""
        per_token = getattr(self.engine, "max_token_chars", None)
        if not per_token:
            return
        cap = principal.tenant.limits.max_prompt_tokens
        context = self.engine.max_model_len
        limit = min(context, cap) if cap else context
        if chars > limit * per_token:
            whose = "this tenant's limit" if limit < context else "the model's context"
            raise ContextLengthError(
                f"The prompt has {chars} characters, more than {limit} tokens ({whose}) can hold.",
                param=field,
                code="prompt_too_long" if limit < context else None,
            )

    def _engine_request(
        self,
        request_id: str,
        principal: Principal,
        resolved: Resolved,
        ids: list[int],
        s: Sampling,
        field: str,
    ) -> EngineRequest:
        limit = self.engine.max_model_len
        limits = principal.tenant.limits
        if not ids:
            raise ContextLengthError("The prompt is empty.", param=field, code="empty_prompt")
        if limits.max_prompt_tokens is not None and len(ids) > limits.max_prompt_tokens:
            raise ContextLengthError(
                f"The prompt has {len(ids)} tokens; this tenant's limit is "
                f"{limits.max_prompt_tokens}.",
                param=field,
                code="prompt_too_long",
            )
        if len(ids) >= limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. "
                f"Your prompt has {len(ids)} tokens.",
                param=field,
            )
        if s.logit_bias and max(s.logit_bias) >= self.engine.vocab_size:
            raise InvalidRequestError(
                f"logit_bias names token id {max(s.logit_bias)}; the vocabulary has "
                f"{self.engine.vocab_size} tokens.",
                param="logit_bias",
                code="invalid_logit_bias",
            )
        budget = s.max_tokens if s.max_tokens is not None else limit - len(ids)
        if limits.max_tokens is not None:
            budget = min(budget, limits.max_tokens)  # the tenant's cap clamps the request
        if len(ids) + budget > limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. You requested "
                f"{len(ids) + budget} tokens ({len(ids)} in the prompt, {budget} for the "
                "completion). Reduce the prompt or max_tokens.",
                param="max_tokens",
            )
        return EngineRequest(
            request_id=request_id,
            prompt_token_ids=ids,
            max_tokens=budget,
            temperature=1.0 if s.temperature is None else s.temperature,
            top_p=1.0 if s.top_p is None else s.top_p,
            stop=s.stop,
            seed=s.seed,
            presence_penalty=s.presence_penalty or 0.0,
            frequency_penalty=s.frequency_penalty or 0.0,
            adapter=adapter_of(resolved.tune) if resolved.tune else None,
            structured=s.structured or self._profile_structure(principal, resolved),
            trace_headers=self.tracing.trace_headers(),
            logit_bias=s.logit_bias,
            cache_salt=_cache_salt(principal.tenant.name),  # tenants never share cache entries
        )

    def _profile_structure(self, principal: Principal, resolved: Resolved) -> dict[str, Any] | None:
        tune_profile = resolved.tune.format if resolved.tune else None
        profile = (
            tune_profile.merged(principal.tenant.format)
            if tune_profile
            else (principal.tenant.format)
        )
        if profile is not None and profile.json_schema is not None:
            return {"json": profile.json_schema}
        return None

    def deadline_error(self, *, first: bool) -> DeadlineError:
        if first:
            return DeadlineError(
                f"The engine gave no output within {self.first_token_timeout_s:g} s; "
                "the request was cancelled."
            )
        return DeadlineError(
            f"The answer took longer than {self.request_timeout_s:g} s; it was cancelled."
        )

    async def admit(
        self, principal: Principal, request: EngineRequest, *, early: bool = False
    ) -> Admission:
        """The tenant's limits (the bound on all requests in flight is kept at the door, by
        `InflightGate`). `early`: the request started on the engine already (`admit_early`)."""
        with self.stage("admit"):
            self.active += 1
            try:
                admission = await self.limiter.admit(
                    principal.tenant, request.reserved_tokens, early=early
                )
            except BaseException as exc:
                self.active -= 1
                if early and not isinstance(exc, asyncio.CancelledError):
                    self.metrics.child(self.metrics.early_starts, "refused").inc()
                raise
            if early:
                self.metrics.child(self.metrics.early_starts, "admitted").inc()
            admission.on_close = self._left
            return admission

    def admit_early(
        self, principal: Principal, request: EngineRequest
    ) -> asyncio.Task[Admission] | None:
        """The admission as a running task, where the request may start on the engine before
        it is in (`gateway.early_start`); None: await `admit` first, as usual."""
        if not self.limiter.starts_early(principal.tenant, request.reserved_tokens):
            return None
        return asyncio.ensure_future(self.admit(principal, request, early=True))

    def _left(self) -> None:
        self.active -= 1

    async def stream(self, request: EngineRequest) -> AsyncIterator[Output]:
        adapter = request.adapter
        if adapter is not None:
            await self.load_adapter(adapter)
            self.inflight[adapter.name] += 1
        queued = time.time_ns()
        first = 0
        try:
            # Closed here, not left to the garbage collector: the engine's clean-up (aborting an
            # unfinished request, giving its connection back) runs now, without a task of its own.
            outputs = self.engine.stream(request)
            try:
                async for out in outputs:
                    if not first:
                        first = time.time_ns()
                        self.tracing.record("engine_queue", queued, first)
                    yield out
            finally:
                await outputs.aclose()  # type: ignore[attr-defined]
        finally:
            if adapter is not None:
                self.inflight[adapter.name] -= 1
            if first:
                self.tracing.record("generate", first)

    async def complete(self, request: EngineRequest, post: OutputPipeline) -> Completion:
        """The whole answer, post-processed; stops the engine early when post-processing ends it.

        An engine that `answers_whole` (a remote server asked for the whole answer) sends one
        output at the end: then only the whole-answer deadline applies, and a blocked answer is
        known once it is finished."""
        parts: list[str] = []
        last: Output | None = None
        finish: str | None = None
        whole = self.engine.answers_whole
        if whole:
            request = dataclasses.replace(request, whole=True)
        outputs = self.stream(request)
        loop = asyncio.get_running_loop()
        total_deadline = loop.time() + self.request_timeout_s
        first_deadline = min(self.first_token_timeout_s, self.request_timeout_s)
        if whole:
            first_deadline = self.request_timeout_s
        try:
            async with asyncio.timeout(first_deadline) as t:
                async for out in outputs:
                    if last is None:
                        t.reschedule(total_deadline)  # the first output came: the whole-answer one
                        if whole and out.finish_reason is not None:  # it came in one piece
                            last = out
                            with self.stage("postprocess"):
                                step = post.whole(out.text)
                            parts.append(step.emit)
                            finish = step.finish_reason or out.finish_reason
                            break
                    last = out
                    step = post.feed(out.text)
                    parts.append(step.emit)
                    if step.finish_reason is not None:
                        finish = step.finish_reason
                        break
        except TimeoutError:
            raise self.deadline_error(first=last is None and not whole) from None
        finally:
            await outputs.aclose()  # aborts the engine request if it is still running
        if last is None or (finish is None and last.finish_reason is None):
            raise EngineUnavailableError("The engine ended the request without an answer.")
        if finish is None:
            with self.stage("postprocess"):
                step = post.finish()
            parts.append(step.emit)
            finish = step.finish_reason or last.finish_reason
        check_structured(request, "".join(parts), finish or "stop")
        return Completion(
            "".join(parts), finish or "stop", last.prompt_tokens, last.completion_tokens
        )

    async def validate(self, tune: Tune) -> None:
        """Check the adapter before its first load (peft config, base, rank, modules, hash)."""
        if tune.adapter_id in self._validated or self.base_info is None:
            return
        from gateway.tune_validation import validate_adapter

        await asyncio.to_thread(validate_adapter, tune, self.base_info)
        self._validated.add(tune.adapter_id)

    async def unload_adapter(self, tune: Tune) -> None:
        if self.inflight[tune.key] > 0:
            raise TuneInUseError(
                f"Tune `{tune.key}` has {self.inflight[tune.key]} requests in flight; "
                "it is unloaded only when none are running.",
                param="name",
            )
        await self.engine.unload_adapter(adapter_of(tune))
        self._validated.discard(tune.adapter_id)
        self.metrics.adapter_evictions.labels(tune.name, tune.version, "unload").inc()

    def _loaded_adapter(self, adapter: Adapter, seconds: float) -> None:
        """The engine loaded an adapter (at start, on demand or for a rollout)."""
        self.metrics.adapter_loads.labels(*_tune_version(adapter), "ok").inc()
        self.metrics.adapter_load_duration.labels(*_tune_version(adapter)).observe(seconds)

    async def load_adapter(self, adapter: Adapter) -> bool:
        with self.stage("adapter_load"):
            tune = self.catalogue.by_adapter_id(adapter.adapter_id)
            try:
                if tune is not None:
                    await self.validate(tune)
                return await self.engine.load_adapter(adapter)
            except Exception:
                self.metrics.adapter_loads.labels(*_tune_version(adapter), "error").inc()
                raise
