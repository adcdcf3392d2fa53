"""Checks on a tune's adapter before it may be loaded: a bad adapter never reaches the engine."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from gateway.catalogue import Tune
from gateway.errors import InvalidRequestError

__all__ = ["AdapterInvalidError", "BaseModelInfo", "validate_adapter"]

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterInvalidError(InvalidRequestError):
    default_code = "adapter_invalid"


class BaseModelInfo:
    """What an adapter is checked against: the served base model's path, name and modules."""

    def __init__(self, path: Path, served_name: str, max_rank: int) -> None:
        self.path = path.resolve()
        self.served_name = served_name
        self.max_rank = max_rank
        self._modules: set[str] | None = None

    @property
    def modules(self) -> set[str]:
        """Every module name component in the base weights (e.g. `q_proj`, `mlp`)."""
        if self._modules is None:
            from safetensors import safe_open

            names: set[str] = set()
            for weights in sorted(self.path.glob("*.safetensors")):
                with safe_open(str(weights), framework="numpy") as fh:
                    for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        names.update(key.split("."))
            self._modules = names
        return self._modules

    @functools.cached_property
    def sha256(self) -> str:
        """The base's identity: its weights and tokenizer (what `tunes build` records)."""
        from gateway.tunebuild.hashing import sha256_files

        return sha256_files(
            sorted(self.path.glob("*.safetensors")) + [self.path / "tokenizer.json"]
        )

    def matches(self, base_ref: str | None) -> bool:
        if not base_ref:
            return False
        if base_ref == self.served_name:
            return True
        candidate = Path(base_ref)
        return candidate.is_absolute() and candidate.resolve() == self.path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_adapter(tune: Tune, base: BaseModelInfo) -> None:
    """Raise `AdapterInvalidError` with a clear message when the adapter cannot be served."""
    where = f"Tune `{tune.name}`"

    def refuse(reason: str) -> AdapterInvalidError:
        return AdapterInvalidError(f"{where} cannot be loaded: {reason}", param="name")

    config_path = tune.adapter_path / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise refuse("its adapter has no adapter_config.json at the catalogued path") from None
    except (OSError, ValueError):
        raise refuse("its adapter_config.json is not valid JSON") from None
    try:
        from peft import LoraConfig

        lora = LoraConfig.from_pretrained(str(tune.adapter_path))
    except Exception as exc:  # peft raises several types for a malformed config
        raise refuse(f"peft does not accept its adapter config ({type(exc).__name__})") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise refuse(f"it is a {config.get('peft_type')} adapter, not LoRA")
    if tune.base_model_sha256 is not None and tune.base_model_sha256 != base.sha256:
        raise refuse("it was built on different base weights (base_model_sha256 differs)")
    if not base.matches(lora.base_model_name_or_path):
        raise refuse(f"it was trained for another base model, not `{base.served_name}`")
    if lora.r > base.max_rank:
        raise refuse(f"its rank {lora.r} is above the engine's limit of {base.max_rank}")
    if lora.r != tune.rank:
        raise refuse(f"its rank {lora.r} differs from the manifest's rank {tune.rank}")
    targets = lora.target_modules
    wanted = {targets} if isinstance(targets, str) else set(targets or ())
    missing = sorted(wanted - base.modules)
    if not wanted or missing:
        raise refuse(f"target modules {missing or 'none'} are not modules of the base model")
    weights = next(
        (tune.adapter_path / n for n in WEIGHT_FILES if (tune.adapter_path / n).is_file()), None
    )
    if weights is None:
        raise refuse("its adapter weights are missing")
    if tune.adapter_sha256 is not None and _sha256(weights) != tune.adapter_sha256:
        raise refuse("its adapter weights do not match the manifest's adapter_sha256")
