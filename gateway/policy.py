"""Tenant policy from `policies/tenants.yaml`: keys, tunes, limits, parameters, input rules.

A `default` section holds what every tenant inherits; a tenant overrides limits field by field,
replaces `allowed_parameters` when it sets them, and adds its own deny patterns to the default's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.catalogue import NAME_PATTERN
from gateway.postprocess.formatting import FormatProfile
from gateway.safety import RuleSet, SafetyConfig, compile_rules
from gateway.yamlconfig import ConfigError, field_line, load_yaml_model

__all__ = [
    "KNOWN_PARAMETERS",
    "EffectiveLimits",
    "KeyRecord",
    "PolicyFile",
    "PolicySet",
    "Tenant",
    "load_policy",
]

TENANTS_FILE = "tenants.yaml"
KNOWN_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "n",
        "user",
        "stream",
        "stream_options",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "logprobs",
        "tools",
        "echo",
        "best_of",
        "suffix",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeySpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the API key")


class Limits(_Strict):
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_prompt_tokens: int | None = Field(None, ge=1)


class DenyPattern(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    pattern: str = Field(min_length=1, max_length=1000)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


class InputRules(_Strict):
    max_messages: int | None = Field(None, ge=1)
    deny_patterns: list[DenyPattern] = Field(default_factory=list)


def _known(params: list[str] | None) -> list[str] | None:
    unknown = sorted(set(params or ()) - KNOWN_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; known: {sorted(KNOWN_PARAMETERS)}")
    return params


AuditContent = Literal["omit", "hash", "redact"]


class Defaults(_Strict):
    limits: Limits = Limits()
    allowed_parameters: list[str] | None = None
    input_rules: InputRules = InputRules()
    safety: SafetyConfig = SafetyConfig()
    format: FormatProfile | None = None
    audit_content: AuditContent = "omit"

    _check_params = field_validator("allowed_parameters")(_known)


class TenantSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    keys: list[KeySpec] = Field(default_factory=list)
    tunes: list[str] = Field(default_factory=list)
    default_tune: str | None = None
    limits: Limits = Limits()
    allowed_parameters: list[str] | None = None
    input_rules: InputRules = InputRules()
    safety: SafetyConfig | None = None
    format: FormatProfile | None = None
    audit_content: AuditContent | None = None

    _check_params = field_validator("allowed_parameters")(_known)

    @model_validator(mode="after")
    def _default_is_allowed(self) -> TenantSpec:
        if self.default_tune is not None and self.default_tune not in self.tunes:
            raise ValueError(f"default_tune `{self.default_tune}` is not in this tenant's tunes")
        return self


class PolicyFile(_Strict):
    default: Defaults = Defaults()
    tenants: list[TenantSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PolicyFile:
        names: set[str] = set()
        hashes: set[str] = set()
        for tenant in self.tenants:
            if tenant.name in names:
                raise ValueError(f"tenant `{tenant.name}` is declared twice")
            names.add(tenant.name)
            for key in tenant.keys:
                if key.sha256 in hashes:
                    raise ValueError(f"key `{key.id}` of tenant `{tenant.name}` reuses a key hash")
                hashes.add(key.sha256)
        return self


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    max_tokens: int | None = None
    max_prompt_tokens: int | None = None

    @property
    def admits_freely(self) -> bool:
        """No rate or concurrency limit: admission has nothing to ask the store."""
        return (
            self.max_concurrent is None
            and self.requests_per_minute is None
            and self.tokens_per_minute is None
        )


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant's policy with the defaults applied."""

    name: str
    tunes: frozenset[str]
    default_tune: str | None
    limits: EffectiveLimits = EffectiveLimits()
    allowed_parameters: frozenset[str] | None = None
    max_messages: int | None = None
    deny_patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(default=())
    safety_input: RuleSet | None = None
    safety_output: RuleSet | None = None
    format: FormatProfile | None = None
    audit_content: str = "omit"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The loaded policy: tenants by name and the file's key records by key hash."""

    tenants: dict[str, Tenant]
    keys: dict[str, KeyRecord]


def _merge_limits(base: Limits, over: Limits) -> EffectiveLimits:
    merged = base.model_dump()
    merged.update({k: getattr(over, k) for k in over.model_fields_set})
    return EffectiveLimits(**merged)


def _tenant(spec: TenantSpec, defaults: Defaults) -> Tenant:
    rules = [*defaults.input_rules.deny_patterns, *spec.input_rules.deny_patterns]
    # A tenant's safety section replaces the default's (so a tenant can tighten or relax it).
    safety = spec.safety if spec.safety is not None else defaults.safety
    params = (
        spec.allowed_parameters
        if spec.allowed_parameters is not None
        else (defaults.allowed_parameters)
    )
    max_messages = (
        spec.input_rules.max_messages
        if "max_messages" in spec.input_rules.model_fields_set
        else defaults.input_rules.max_messages
    )
    return Tenant(
        name=spec.name,
        tunes=frozenset(spec.tunes),
        default_tune=spec.default_tune,
        limits=_merge_limits(defaults.limits, spec.limits),
        allowed_parameters=frozenset(params) if params is not None else None,
        max_messages=max_messages,
        deny_patterns=tuple((r.id, re.compile(r.pattern)) for r in rules),
        safety_input=compile_rules(safety.input) if safety.input else None,
        safety_output=compile_rules(safety.output) if safety.output else None,
        format=spec.format if spec.format is not None else defaults.format,
        audit_content=spec.audit_content or defaults.audit_content,
    )


def load_policy(policies_dir: Path, known_tunes: set[str] | None = None) -> PolicySet:
    """Load and validate `tenants.yaml`; `ConfigError` names the file, field and line."""
    path = policies_dir / TENANTS_FILE
    policy = load_yaml_model(path, PolicyFile)
    tenants: dict[str, Tenant] = {}
    keys: dict[str, KeyRecord] = {}
    for i, spec in enumerate(policy.tenants):
        if known_tunes is not None:
            for j, tune in enumerate(spec.tunes):
                if tune not in known_tunes:
                    raise ConfigError(
                        path,
                        f"tune `{tune}` is not in the tune catalogue",
                        field=f"tenants.{i}.tunes.{j}",
                        line=field_line(path, ("tenants", i, "tunes", j)),
                    )
        tenants[spec.name] = _tenant(spec, policy.default)
        for key in spec.keys:
            keys[key.sha256] = KeyRecord(key_id=key.id, tenant=spec.name)
    return PolicySet(tenants, keys)
