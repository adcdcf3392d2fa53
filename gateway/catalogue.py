"""The tune catalogue: `tunes/<name>/tune.yaml` manifests. Only catalogued tunes are served."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.postprocess.formatting import FormatProfile
from gateway.yamlconfig import ConfigError, load_yaml_model

__all__ = ["NAME_PATTERN", "Tune", "TuneCatalogue", "TuneManifest", "adapter_id"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MANIFEST = "tune.yaml"


class TuneManifest(BaseModel):
    """What an operator writes in `tunes/<name>/tune.yaml`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    base_model: str = Field(min_length=1)
    adapter_path: str = Field(min_length=1)
    rank: int = Field(ge=1, le=512)
    adapter_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    format: FormatProfile | None = None


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


def _load_manifest(path: Path) -> Tune:
    manifest = load_yaml_model(path, TuneManifest)
    if manifest.name != path.parent.name:
        raise ConfigError(
            path, f"name `{manifest.name}` must equal its folder `{path.parent.name}`", field="name"
        )
    adapter = Path(manifest.adapter_path)
    if not adapter.is_absolute():
        adapter = (path.parent / adapter).resolve()
    return Tune(
        name=manifest.name,
        description=manifest.description,
        base_model=manifest.base_model,
        adapter_path=adapter,
        rank=manifest.rank,
        adapter_id=adapter_id(manifest.name),
        format=manifest.format,
        adapter_sha256=manifest.adapter_sha256,
    )


class TuneCatalogue:
    """All tunes declared under one directory, validated against the served base model."""

    def __init__(self, root: Path, base_model: str, tunes: dict[str, Tune]) -> None:
        self.root = root
        self.base_model = base_model
        self._tunes = tunes

    @classmethod
    def load(cls, root: Path, base_model: str) -> TuneCatalogue:
        tunes: dict[str, Tune] = {}
        for manifest in sorted(root.glob(f"*/{MANIFEST}")):
            tune = _load_manifest(manifest)
            cls._check(tune, manifest, base_model, tunes)
            tunes[tune.name] = tune
        return cls(root, base_model, tunes)

    @staticmethod
    def _check(tune: Tune, path: Path, base_model: str, known: dict[str, Tune]) -> None:
        if tune.base_model != base_model:
            raise ConfigError(
                path,
                f"tune is for base model `{tune.base_model}`, this gateway serves `{base_model}`",
                field="base_model",
            )
        for other in known.values():
            if other.name != tune.name and other.adapter_id == tune.adapter_id:
                raise ConfigError(
                    path, f"adapter id collides with tune `{other.name}`", field="name"
                )

    def get(self, name: str) -> Tune | None:
        return self._tunes.get(name)

    def names(self) -> list[str]:
        return sorted(self._tunes)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._tunes[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._tunes)

    def refresh(self, name: str) -> Tune | None:
        """Re-read one tune's manifest from disk (a tune added or changed at runtime)."""
        if not re.fullmatch(NAME_PATTERN, name):
            return None
        path = self.root / name / MANIFEST
        if not path.is_file():
            return self._tunes.get(name)
        tune = _load_manifest(path)
        self._check(tune, path, self.base_model, self._tunes)
        self._tunes[name] = tune
        return tune
