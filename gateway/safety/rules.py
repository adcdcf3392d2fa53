"""Safety rule configuration (pydantic) and its compiled, immutable form."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from re import _constants as _sc  # type: ignore[attr-defined]
from re import _parser as _sp  # type: ignore[attr-defined]
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.safety.detectors import BUILTINS, Finding, Validator, terms_regex

Action = Literal["block", "redact", "flag"]
RuleKind = Literal[
    "email", "phone", "payment_card", "iban", "national_id", "api_key", "private_key",
    "jwt", "deny_terms", "deny_regex", "prompt_injection",
]  # fmt: skip

MAX_PATTERN = 500  # characters of a deny_regex, and of the text it may match
MAX_TERMS = 1000
MAX_TERM_LEN = 200
_UNBOUNDED = 1 << 30


class RuleConfig(BaseModel):
    """One entry of a tenant's `safety.input` or `safety.output` list."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: RuleKind
    action: Action
    terms: list[str] = Field(default_factory=list)
    pattern: str | None = None
    replacement: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _check_kind_fields(self) -> RuleConfig:
        if self.kind == "deny_terms":
            try:
                _check_terms(self.terms)
            except ValueError as exc:
                raise ValueError(f"rule {self.id!r}: {exc}") from None
        elif self.terms:
            raise ValueError(f"rule {self.id!r}: 'terms' is only valid for kind deny_terms")
        if self.kind == "deny_regex":
            if self.pattern is None:
                raise ValueError(f"rule {self.id!r}: kind deny_regex needs a 'pattern'")
            try:
                check_tenant_pattern(self.pattern)
            except ValueError as exc:
                raise ValueError(f"rule {self.id!r}: {exc}") from None
        elif self.pattern is not None:
            raise ValueError(f"rule {self.id!r}: 'pattern' is only valid for kind deny_regex")
        if self.replacement is not None and self.action != "redact":
            raise ValueError(f"rule {self.id!r}: 'replacement' is only valid with action redact")
        return self


def _check_terms(terms: list[str]) -> None:
    if not any(t.strip() for t in terms):
        raise ValueError("kind deny_terms needs a non-empty 'terms' list")
    if len(terms) > MAX_TERMS:
        raise ValueError(f"at most {MAX_TERMS} terms are allowed")
    if any(not t.strip() or len(t) > MAX_TERM_LEN for t in terms):
        raise ValueError(f"each term must be non-blank and at most {MAX_TERM_LEN} characters")


class SafetyConfig(BaseModel):
    """A tenant's safety rules for prompts (`input`) and completions (`output`)."""

    model_config = ConfigDict(extra="forbid")

    input: list[RuleConfig] = Field(default_factory=list)
    output: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> SafetyConfig:
        for name, rules in (("input", self.input), ("output", self.output)):
            ids = [r.id for r in rules]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"safety.{name}: duplicate rule ids {dupes}")
        return self


# --- pattern bounds ------------------------------------------------------------------


@dataclass(frozen=True)
class PatternBounds:
    max_width: int  # the longest possible match
    behind: int  # how far lookbehinds may look before the match start
    ahead: int  # how far lookaheads may look past the match end


def _walk(items: _sp.SubPattern, acc: list[int]) -> None:
    """Add up lookbehind (acc[0]) and lookahead (acc[1]) widths: a safe over-estimate."""
    repeats = (_sc.MAX_REPEAT, _sc.MIN_REPEAT, getattr(_sc, "POSSESSIVE_REPEAT", None))
    for op, av in items:
        if op in (_sc.ASSERT, _sc.ASSERT_NOT):
            direction, sub = av
            acc[0 if direction < 0 else 1] += min(sub.getwidth()[1], _UNBOUNDED)
            _walk(sub, acc)
        elif op is _sc.SUBPATTERN:
            _walk(av[-1], acc)
        elif op in repeats:
            _walk(av[2], acc)
        elif op is _sc.BRANCH:
            for branch in av[1]:
                _walk(branch, acc)
        elif op is getattr(_sc, "ATOMIC_GROUP", None):
            _walk(av, acc)
        elif op is _sc.GROUPREF_EXISTS:
            for branch in av[1:]:
                if branch is not None:
                    _walk(branch, acc)


def pattern_bounds(pattern: str, flags: int = 0) -> PatternBounds:
    """Maximum match width and lookaround reach of a pattern (unbounded: 2**30)."""
    parsed = _sp.parse(pattern, flags)
    acc = [0, 0]
    _walk(parsed, acc)
    return PatternBounds(min(parsed.getwidth()[1], _UNBOUNDED), acc[0], acc[1])


def check_tenant_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a tenant deny_regex or raise ValueError saying what is wrong."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern is longer than {MAX_PATTERN} characters")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern does not compile: {exc}") from None
    if _sp.parse(pattern).getwidth()[0] == 0 or compiled.fullmatch("") is not None:
        raise ValueError("pattern can match the empty string")
    bounds = pattern_bounds(pattern)
    if max(bounds.max_width, bounds.ahead, bounds.behind) > MAX_PATTERN:
        raise ValueError(
            f"pattern can match more than {MAX_PATTERN} characters or is unbounded "
            "(use bounded repeats such as {1,50} instead of * or +)"
        )
    return compiled


# --- compiled rules ------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One compiled rule."""

    rule_id: str
    kind: str
    action: str
    replacement: str
    regex: re.Pattern[str]
    validate: Validator | None
    breaker: re.Pattern[str] | None  # matches one character no match can contain
    max_len: int  # the longest text this rule can match
    horizon: int  # how far past a match start the regex engine may look
    context: int  # how far before a match start the regex engine may look

    def check(self, m: re.Match[str], offset: int = 0) -> Finding | None:
        span = self.validate(m) if self.validate is not None else m.span()
        if span is None:
            return None
        return Finding(self.rule_id, self.kind, span[0] + offset, span[1] + offset, self.action)


def build_detector(cfg: RuleConfig) -> Detector:
    validate: Validator | None = None
    charset: str | None = None
    if cfg.kind == "deny_terms":
        regex, charset = terms_regex(cfg.terms)
    elif cfg.kind == "deny_regex":
        regex = check_tenant_pattern(cfg.pattern or "")
    else:
        spec = BUILTINS[cfg.kind]
        regex, charset, validate = spec.regex, spec.charset, spec.validate
    bounds = pattern_bounds(regex.pattern, regex.flags)
    return Detector(
        rule_id=cfg.id,
        kind=cfg.kind,
        action=cfg.action,
        replacement=cfg.replacement or f"[REDACTED:{cfg.id}]",
        regex=regex,
        validate=validate,
        breaker=None if charset is None else re.compile(f"[^{charset}]"),
        max_len=bounds.max_width,
        horizon=bounds.max_width + bounds.ahead + 2,  # +2: `$` may peek at "\n" + end
        context=bounds.behind + 1,  # +1: `\b` and `^` (MULTILINE) peek one back
    )


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules; `max_window` is the longest text any rule can match."""

    detectors: tuple[Detector, ...] = ()
    max_window: int = 0
    context: int = 1

    @cached_property
    def order(self) -> dict[str, int]:
        return {d.rule_id: i for i, d in enumerate(self.detectors)}

    @cached_property
    def replacements(self) -> dict[str, str]:
        return {d.rule_id: d.replacement for d in self.detectors}


def compile_rules(configs: Sequence[RuleConfig]) -> RuleSet:
    """Compile validated rule configs (in order; ids must be unique)."""
    ids = [c.id for c in configs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate rule ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    detectors = tuple(build_detector(c) for c in configs)
    return RuleSet(
        detectors=detectors,
        max_window=max((d.max_len for d in detectors), default=0),
        context=max((d.context for d in detectors), default=1),
    )
