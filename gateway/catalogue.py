"""The tune catalogue: `tunes/<name>/tune.yaml` manifests. Only catalogued tunes are served."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.postprocess.formatting import FormatProfile
from gateway.yamlconfig import ConfigError, load_yaml_model

__all__ = [
    "NAME_PATTERN",
    "Tune",
    "TuneCatalogue",
    "TuneManifest",
    "adapter_id",
    "versions_of",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MANIFEST = "tune.yaml"


VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
Status = Literal["draft", "canary", "live", "retired"]


class VersionManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN)
    adapter_path: str = Field(min_length=1)
    rank: int = Field(ge=1, le=512)
    adapter_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    status: Status = "draft"
    base_model_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    target_modules: list[str] | None = None
    provenance: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None


class TuneManifest(BaseModel):
    """What an operator writes in `tunes/<name>/tune.yaml`: one adapter, or `versions`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    base_model: str = Field(min_length=1)
    adapter_path: str | None = Field(None, min_length=1)
    rank: int | None = Field(None, ge=1, le=512)
    adapter_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    versions: list[VersionManifest] | None = Field(None, min_length=1)
    format: FormatProfile | None = None
    owner: str | None = None
    domain: str | None = None
    system_prompt: str | None = None
    eval_threshold: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_shape(self) -> TuneManifest:
        if self.versions is None:
            if self.adapter_path is None or self.rank is None:
                raise ValueError("give `adapter_path` and `rank`, or a list of `versions`")
            self.versions = [
                VersionManifest(
                    version="1",
                    adapter_path=self.adapter_path,
                    rank=self.rank,
                    adapter_sha256=self.adapter_sha256,
                    status="live",
                )
            ]
        elif self.adapter_path is not None or self.rank is not None:
            raise ValueError("with `versions`, set `adapter_path` and `rank` per version")
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError("versions must be unique")
        if sum(v.status == "live" for v in self.versions) != 1:
            raise ValueError("exactly one version must have status `live`")
        return self


def versions_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The `versions` list of a raw manifest, turning a one-adapter manifest into version 1."""
    if "versions" not in doc:
        doc["versions"] = []
        if "adapter_path" in doc:
            first = {
                "version": "1",
                "adapter_path": doc.pop("adapter_path"),
                "rank": doc.pop("rank"),
                "status": "live",
            }
            if "adapter_sha256" in doc:
                first["adapter_sha256"] = doc.pop("adapter_sha256")
            doc["versions"].append(first)
    versions: list[dict[str, Any]] = doc["versions"]
    return versions


def adapter_id(name: str) -> int:
    """A stable positive integer id for an adapter name (same in every process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % (2**31 - 1) + 1


@dataclass(frozen=True, slots=True)
class Tune:
    name: str
    description: str
    base_model: str
    adapter_path: Path
    rank: int
    adapter_id: int
    format: FormatProfile | None = None
    adapter_sha256: str | None = None
    version: str = "1"
    status: str = "live"
    eval_score: float | None = None
    eval_threshold: float | None = None
    base_model_sha256: str | None = None
    system_prompt: str | None = None

    @property
    def key(self) -> str:
        """`name@version`: the adapter's name on the engine."""
        return f"{self.name}@{self.version}"


def _load_manifest(path: Path) -> list[Tune]:
    manifest = load_yaml_model(path, TuneManifest)
    if manifest.name != path.parent.name:
        raise ConfigError(
            path, f"name `{manifest.name}` must equal its folder `{path.parent.name}`", field="name"
        )
    out = []
    for v in manifest.versions or ():
        adapter = Path(v.adapter_path)
        if not adapter.is_absolute():
            adapter = (path.parent / adapter).resolve()
        # A one-adapter manifest keeps the plain name as its engine id (stable across releases).
        ident = manifest.name if manifest.adapter_path else f"{manifest.name}@{v.version}"
        out.append(
            Tune(
                name=manifest.name,
                description=manifest.description,
                base_model=manifest.base_model,
                adapter_path=adapter,
                rank=v.rank,
                adapter_id=adapter_id(ident),
                format=manifest.format,
                adapter_sha256=v.adapter_sha256,
                version=v.version,
                status=v.status,
                eval_score=(v.eval or {}).get("pass_rate"),
                eval_threshold=manifest.eval_threshold,
                base_model_sha256=v.base_model_sha256,
                system_prompt=manifest.system_prompt,
            )
        )
    return out


class TuneCatalogue:
    """All tunes declared under one directory, every version, checked against the base model.

    `get(name)` is the version the manifest marks `live`; the runtime rollout (promote, canary,
    rollback) lives in the store and picks among `versions(name)`.
    """

    def __init__(self, root: Path, base_model: str, tunes: dict[str, list[Tune]]) -> None:
        self.root = root
        self.base_model = base_model
        self._tunes = tunes

    @classmethod
    def load(cls, root: Path, base_model: str) -> TuneCatalogue:
        tunes: dict[str, list[Tune]] = {}
        for manifest in sorted(root.glob(f"*/{MANIFEST}")):
            versions = _load_manifest(manifest)
            cls._check(versions, manifest, base_model, tunes)
            tunes[versions[0].name] = versions
        return cls(root, base_model, tunes)

    @staticmethod
    def _check(
        versions: list[Tune], path: Path, base_model: str, known: dict[str, list[Tune]]
    ) -> None:
        for tune in versions:
            if tune.base_model != base_model:
                raise ConfigError(
                    path,
                    f"tune is for base model `{tune.base_model}`, this gateway serves "
                    f"`{base_model}`",
                    field="base_model",
                )
            for others in known.values():
                for other in others:
                    if other.name != tune.name and other.adapter_id == tune.adapter_id:
                        raise ConfigError(
                            path, f"adapter id collides with tune `{other.name}`", field="name"
                        )

    def get(self, name: str) -> Tune | None:
        versions = self._tunes.get(name)
        if not versions:
            return None
        return next((t for t in versions if t.status == "live"), versions[0])

    def get_version(self, name: str, version: str) -> Tune | None:
        return next((t for t in self._tunes.get(name, ()) if t.version == version), None)

    def versions(self, name: str) -> list[Tune]:
        return list(self._tunes.get(name, ()))

    def by_adapter_id(self, ident: int) -> Tune | None:
        for versions in self._tunes.values():
            for tune in versions:
                if tune.adapter_id == ident:
                    return tune
        return None

    def names(self) -> list[str]:
        return sorted(self._tunes)

    def __iter__(self):  # type: ignore[no-untyped-def]
        """The manifest-live version of each tune."""
        return iter(t for name in self.names() if (t := self.get(name)) is not None)

    def all_versions(self) -> list[Tune]:
        return [t for name in self.names() for t in self._tunes[name]]

    def __len__(self) -> int:
        return len(self._tunes)

    def refresh(self, name: str) -> Tune | None:
        """Re-read one tune's manifest from disk (a tune added or changed at runtime)."""
        if not re.fullmatch(NAME_PATTERN, name):
            return None
        path = self.root / name / MANIFEST
        if not path.is_file():
            return self.get(name)
        versions = _load_manifest(path)
        self._check(versions, path, self.base_model, self._tunes)
        self._tunes[name] = versions
        return self.get(name)
