"""Per-request bookkeeping: metrics and exactly one audit record, whatever the outcome."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from typing import Any

from gateway.safety import sliced
from gateway.service import Gateway

__all__ = ["Tracker", "decision_of"]

log = logging.getLogger("gateway.requests")
_CLASS = [f"{c}xx" for c in range(10)]  # a status' class label, by its first digit


@functools.cache
def audit_redaction_rules() -> Any:
    """Every personal-data and secret detector, redacting, for audit records kept as text."""
    from gateway.safety import RuleConfig, compile_rules

    kinds = [
        "email",
        "phone",
        "payment_card",
        "iban",
        "national_id",
        "api_key",
        "private_key",
        "jwt",
    ]
    return compile_rules([RuleConfig(id=f"audit-{k}", kind=k, action="redact") for k in kinds])


def decision_of(status: int, finish_reason: str | None) -> str:
    if status == 499:
        return "cut_off"
    if finish_reason == "content_filter" or status == 451:
        return "blocked"
    if status < 300:
        return "served"
    return "denied" if status < 500 else "failed"


class Tracker:
    __slots__ = (
        "_future",
        "_gap",
        "_last",
        "_prompt_kept",
        "answer_text",
        "audit",
        "audit_mode",
        "completion_tokens",
        "content",
        "findings",
        "gw",
        "key_id",
        "prompt_text",
        "prompt_tokens",
        "request_id",
        "route",
        "span_attrs",
        "start",
        "tenant",
        "tune",
        "version",
    )

    def __init__(self, gw: Gateway, route: str, request_id: str) -> None:
        self.gw = gw
        self.route = route
        self.request_id = request_id
        self.tenant = ""
        self.key_id = ""
        self.tune = "none"
        self.version: str | None = None
        self.start = time.perf_counter()
        self.findings: list[str] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.content: dict[str, Any] = {}
        self.audit_mode = "omit"
        self.prompt_text: str | None = None
        self._prompt_kept: str | None = None  # the prompt as the record keeps it, when done early
        self.answer_text: str | None = None
        self._future: asyncio.Future[None] | None = None
        self._gap: Any = None
        self._last = 0.0
        # GenAI attributes for the request span (filled by the route only when tracing is on).
        self.span_attrs: dict[str, Any] | None = {} if gw.tracing.enabled else None

    def first_token(self) -> None:
        now = time.perf_counter()
        m = self.gw.metrics
        m.child(m.ttft, self.tenant, self.tune).observe(now - self.start)
        self._gap = m.child(m.token_gap, self.tune)
        self._last = now

    def chunk_sent(self) -> None:
        """A streamed chunk went out: the gap since the previous one is observed."""
        now = time.perf_counter()
        if self._gap is not None:
            self._gap.observe(now - self._last)
        self._last = now

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens, self.completion_tokens = prompt, completion
        m = self.gw.metrics
        m.child(m.tokens, self.tenant, self.tune, "prompt").inc(prompt)
        m.child(m.tokens, self.tenant, self.tune, "completion").inc(completion)

    def done(
        self, status: int, *, code: str | None = None, finish_reason: str | None = None
    ) -> None:
        """Record the outcome once: metrics now, the audit record queued for the writer."""
        if self._future is not None:
            return
        elapsed = time.perf_counter() - self.start
        m = self.gw.metrics
        status_class = _CLASS[status // 100]
        m.child(
            m.requests, self.route, self.tenant, self.tune, self.version or "", status_class
        ).inc()
        m.child(m.request_duration, self.route, self.tenant, self.tune).observe(elapsed)
        if self.span_attrs is not None:
            self._annotate_span(status, code, finish_reason)
        if log.isEnabledFor(logging.DEBUG):  # an access log line, names and numbers only
            log.debug(
                "request finished",
                extra={
                    "route": self.route,
                    "tenant": self.tenant,
                    "tune": self.tune,
                    "version": self.version,
                    "status": status,
                    "code": code,
                    "latency_ms": round(elapsed * 1000, 2),
                },
            )
        record = {
            "ts": round(time.time(), 3),
            "request_id": self.request_id,
            "route": self.route,
            "tenant": self.tenant or None,
            "key_id": self.key_id or None,
            "tune": self.tune,
            "version": self.version,
            "decision": decision_of(status, finish_reason),
            "status": status,
            "code": code,
            "finish_reason": finish_reason,
            "findings": self.findings,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": round(elapsed * 1000, 2),
            **self.content,
            **self._kept_content(),
        }
        self._future = self.gw.audit.submit(record)

    def _annotate_span(self, status: int, code: str | None, finish: str | None) -> None:
        """GenAI semantic-convention attributes on the request span (names, never content)."""
        from gateway.observability.tracing import current_span

        span = current_span()
        if span is None or not span.is_recording():
            return
        attrs = self.span_attrs or {}
        operation = attrs.pop("gen_ai.operation.name", self.route)
        span.update_name(f"{operation} {attrs.get('gen_ai.request.model', '')}".strip())
        span.set_attributes(
            {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": "vllm",
                **attrs,
                "gen_ai.usage.input_tokens": self.prompt_tokens,
                "gen_ai.usage.output_tokens": self.completion_tokens,
                "tunegate.tenant": self.tenant,
                "tunegate.tune": self.tune,
                "tunegate.tune.version": self.version or "",
                "tunegate.decision": decision_of(status, finish),
            }
        )
        if finish is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [finish])
        if code is not None:
            span.set_attribute("error.type", code)

    def _kept_content(self) -> dict[str, str]:
        """Prompts and answers as the tenant's policy says: omitted, hashed or redacted."""
        if self.audit_mode == "omit":
            return {}
        texts = {"prompt": self.prompt_text, "answer": self.answer_text}
        if self.audit_mode == "hash":
            return {
                f"{k}_sha256": hashlib.sha256(v.encode()).hexdigest()
                for k, v in texts.items()
                if v is not None
            }
        from gateway.safety import scan

        rules = audit_redaction_rules()
        kept = {"prompt": self._prompt_kept} if self._prompt_kept is not None else {}
        for k, v in texts.items():
            if v is not None and k not in kept:
                kept[k] = scan(v, rules).text
        return kept

    async def keep_prompt(self, mode: str, text: str) -> None:
        """The tenant's audit mode and the prompt for the record. A long prompt kept redacted is
        redacted now, in slices with the event loop let run between them: `done()`, which
        writes the record, runs at once."""
        self.audit_mode, self.prompt_text = mode, text
        if mode == "redact" and len(text) > sliced.SLICE_CHARS:
            self._prompt_kept = (await sliced.scan_in_slices(text, audit_redaction_rules())).text

    async def durable(self) -> None:
        """Wait until the audit record is committed (or spooled / refused, as configured)."""
        if self._future is not None:
            with self.gw.tracing.stage("audit"):
                await self.gw.audit.wait(self._future)
