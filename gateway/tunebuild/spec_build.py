"""`tunegate tunes build SPEC`: train a LoRA tune version from JSONL chat demonstrations.

The spec (YAML) names the tune, the version, the data, the base model and the training settings.
The build is deterministic (fixed seeds and threads), keeps a held-out split for evaluation,
and writes the adapter plus a `draft` version entry, with its provenance, into the manifest.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from gateway.catalogue import versions_of
from gateway.tunebuild.data import Demonstration, DemonstrationError, load_demonstrations
from gateway.tunebuild.hashing import sha256_files

__all__ = ["BuildSpec", "build_from_spec"]

_STEP = re.compile(r"step (\d+)/(\d+)")


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1, le=256)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-3, gt=0)
    seed: int = 0
    max_seq_len: int = Field(128, ge=8)
    threads: int = Field(2, ge=1)


class BuildSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
    description: str = ""
    owner: str | None = None
    domain: str | None = None
    data: str
    held_out: float = Field(0.1, ge=0, lt=0.9)
    base_model: str = "tunegate-demo-base"
    base_path: str = "build/demo/base"
    tunes_dir: str = "tunes"
    lora: LoraSpec = LoraSpec()
    train: TrainSpec = TrainSpec()


def _split(demos: list[Demonstration], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    order = list(range(len(demos)))
    random.Random(seed).shuffle(order)
    n_held = int(len(demos) * fraction)
    held = sorted(order[:n_held])
    keep = sorted(order[n_held:])
    return [demos[i] for i in keep], [demos[i] for i in held]


def _progress(total: int) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)

    def log(line: str) -> None:
        m = _STEP.search(line)
        if m:
            bar.n = int(m.group(1))
            bar.set_postfix_str("loss " + line.rsplit("loss", 1)[-1].strip())
            bar.refresh()
        else:
            bar.write(line.strip())

    return bar, log


def build_from_spec(spec_path: Path, root: Path = Path(".")) -> dict[str, Any]:
    """Train, then record the version in the manifest. Raises `DemonstrationError` on bad data."""
    from gateway.tunebuild.base import TrainSettings
    from gateway.tunebuild.lora import LoraSettings, train_lora

    spec = BuildSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    here = spec_path.parent
    data = (here / spec.data).resolve()
    base = (root / spec.base_path).resolve()
    demos = load_demonstrations(data)
    train_set, held_out = _split(demos, spec.held_out, spec.train.seed)
    tune_dir = (root / spec.tunes_dir / spec.name).resolve()
    out = tune_dir / "versions" / spec.version
    if out.exists():
        raise FileExistsError(f"{spec.name}@{spec.version} already exists at {out}")
    out.mkdir(parents=True)
    with (out / "held_out.jsonl").open("w") as fh:
        for demo in held_out:
            fh.write(json.dumps({"messages": demo.as_chat()}) + "\n")
    settings = TrainSettings(
        steps=spec.train.steps,
        batch_size=spec.train.batch_size,
        lr=spec.train.lr,
        seed=spec.train.seed,
        max_seq_len=spec.train.max_seq_len,
        log_every=max(1, spec.train.steps // 50),
    )
    lora = LoraSettings(
        spec.lora.rank, spec.lora.alpha, tuple(spec.lora.target_modules), spec.lora.dropout
    )
    bar, log = _progress(spec.train.steps)
    started = time.perf_counter()
    try:
        loss = train_lora(
            spec.name, train_set, base, lora, settings, out, threads=spec.train.threads, log=log
        )
    finally:
        bar.close()
    entry = {
        "version": spec.version,
        "adapter_path": f"versions/{spec.version}",
        "rank": spec.lora.rank,
        "adapter_sha256": hashlib.sha256(
            (out / "adapter_model.safetensors").read_bytes()
        ).hexdigest(),
        "status": "draft",
        "base_model_sha256": sha256_files(
            sorted(base.glob("*.safetensors")) + [base / "tokenizer.json"]
        ),
        "target_modules": list(spec.lora.target_modules),
        "provenance": {
            "data": str(spec.data),
            "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
            "demonstrations": len(demos),
            "trained_on": len(train_set),
            "held_out": len(held_out),
            "train": spec.train.model_dump(),
            "lora": spec.lora.model_dump(),
            "final_loss": round(loss, 4),
            "seconds": round(time.perf_counter() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    entry["status"] = _record(tune_dir / "tune.yaml", spec, entry)
    return entry


def _record(manifest_path: Path, spec: BuildSpec, entry: dict[str, Any]) -> str:
    """Add the version to the manifest (a new manifest if the tune is new)."""
    if manifest_path.is_file():
        doc = yaml.safe_load(manifest_path.read_text()) or {}
    else:
        doc = {"name": spec.name, "description": spec.description, "base_model": spec.base_model}
        entry = {**entry, "status": "live"}  # the first version of a new tune serves
    for key in ("owner", "domain"):
        if getattr(spec, key) and key not in doc:
            doc[key] = getattr(spec, key)
    versions_of(doc).append(entry)
    manifest_path.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    return str(entry["status"])


def main_build_spec(spec: str) -> int:
    try:
        entry = build_from_spec(Path(spec))
    except DemonstrationError as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 2
    p = entry["provenance"]
    print(
        f"built version {entry['version']} ({entry['status']}): {p['trained_on']} "
        "demonstrations, "
        f"{p['held_out']} held out, loss {p['final_loss']}, {p['seconds']}s"
    )
    return 0
