"""Tenants from `policies/*.yaml`: API keys (SHA-256 hashes only), allowed tunes, default tune."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.catalogue import NAME_PATTERN
from gateway.yamlconfig import ConfigError, load_yaml_model

__all__ = ["KeyRecord", "PolicyFile", "Tenant", "TenantDirectory", "TenantSpec"]

TENANTS_FILE = "tenants.yaml"


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the API key")


class TenantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    keys: list[KeySpec] = Field(default_factory=list)
    tunes: list[str] = Field(default_factory=list)
    default_tune: str | None = None

    @model_validator(mode="after")
    def _default_is_allowed(self) -> TenantSpec:
        if self.default_tune is not None and self.default_tune not in self.tunes:
            raise ValueError(f"default_tune `{self.default_tune}` is not in this tenant's tunes")
        return self


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
class Tenant:
    name: str
    tunes: frozenset[str]
    default_tune: str | None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str


class TenantDirectory:
    """Tenants by name and key records by key hash."""

    def __init__(self, tenants: dict[str, Tenant], keys: dict[str, KeyRecord]) -> None:
        self.tenants = tenants
        self.keys = keys

    @classmethod
    def load(cls, policies_dir: Path, known_tunes: set[str] | None = None) -> TenantDirectory:
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
                        )
            tenants[spec.name] = Tenant(spec.name, frozenset(spec.tunes), spec.default_tune)
            for key in spec.keys:
                keys[key.sha256] = KeyRecord(key_id=key.id, tenant=spec.name)
        return cls(tenants, keys)
