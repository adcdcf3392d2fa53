"""Build (or reuse) the demo base model and demo tunes described by tunes/demo/recipe.yaml.

    python -m gateway.tunebuild.demo [--out build/demo] [--force]

Output: <out>/base/ (HF model dir: config, safetensors, tokenizer with chat template),
<out>/adapters/<tune>/ (peft adapters), <out>/stamp.json (hash of every input). A build whose
stamp matches the inputs is reused; torch/transformers/peft are only imported to build.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.tunebuild.data import Demonstration, DemonstrationError, load_demonstrations

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_RECIPE",
    "DemoBuild",
    "RecipeError",
    "ensure_demo_build",
    "inputs_hash",
    "load_recipe",
    "main_build",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO_ROOT / "tunes" / "demo" / "recipe.yaml"
DEFAULT_OUT = REPO_ROOT / "build" / "demo"
STAMP = "stamp.json"
_VERSIONED = ("torch", "transformers", "peft", "tokenizers", "safetensors")
Log = Callable[[str], None]


class RecipeError(ValueError):
    """The recipe file is missing a key or has a wrong value."""


@dataclass(frozen=True, slots=True)
class DemoBuild:
    out_dir: Path
    base_dir: Path
    base_name: str
    adapters: dict[str, Path]  # tune name -> peft adapter dir
    descriptions: dict[str, str]
    max_lora_rank: int
    stamp: str
    built: bool  # True when this call trained, False when the cached build was reused
    meta: dict[str, Any] = field(default_factory=dict)  # stamp.json: losses, timings, seconds


def load_recipe(path: Path = DEFAULT_RECIPE) -> dict[str, Any]:
    import yaml

    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
        names = [t["name"] for t in recipe["tunes"]]
        for key in ("threads", "tokenizer", "lora"):
            recipe[key]
        for key in ("data", "config", "train"):
            recipe["base"][key]
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise RecipeError(f"{path}: missing or malformed key {exc}") from None
    if recipe["base"].get("architecture", "LlamaForCausalLM") != "LlamaForCausalLM":
        raise RecipeError(f"{path}: only base.architecture LlamaForCausalLM is supported")
    if len(set(names)) != len(names) or not all(str(n).isidentifier() for n in names):
        raise RecipeError(f"{path}: tune names must be unique identifiers, got {names}")
    return dict(recipe)


def _data_files(recipe: dict[str, Any], recipe_path: Path) -> dict[str, Path]:
    files = {"base": recipe["base"]["data"], **{t["name"]: t["data"] for t in recipe["tunes"]}}
    return {name: (recipe_path.parent / rel).resolve() for name, rel in files.items()}


def inputs_hash(recipe_path: Path = DEFAULT_RECIPE) -> str:
    """sha256 over the recipe, its data files, gateway/tunebuild/*.py and library versions."""
    recipe = load_recipe(recipe_path)
    parts = [("recipe", recipe_path), *sorted(_data_files(recipe, recipe_path).items())]
    parts += [(f"src/{p.name}", p) for p in sorted(Path(__file__).parent.glob("*.py"))]
    h = hashlib.sha256()
    for name, path in parts:
        data = path.read_bytes() if path.is_file() else b"missing"
        h.update(f"{name}\0".encode() + hashlib.sha256(data).digest())
    for dist in _VERSIONED:
        try:
            h.update(f"{dist}={metadata.version(dist)}\0".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none\0".encode())
    return h.hexdigest()


def _describe(
    out_dir: Path, recipe: dict[str, Any], built: bool, meta: dict[str, Any]
) -> DemoBuild:
    tunes, rank = recipe["tunes"], recipe["lora"]["rank"]
    return DemoBuild(
        out_dir=out_dir,
        base_dir=out_dir / "base",
        base_name=str(recipe["base"].get("name", "base")),
        adapters={t["name"]: out_dir / "adapters" / t["name"] for t in tunes},
        descriptions={t["name"]: str(t.get("description", "")).strip() for t in tunes},
        max_lora_rank=max(int(t.get("rank", rank)) for t in tunes),
        stamp=str(meta["inputs"]),
        built=built,
        meta=meta,
    )


def _cached(out_dir: Path, recipe: dict[str, Any], stamp: str) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads((out_dir / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = [out_dir / "base" / f for f in ("config.json", "model.safetensors", "tokenizer.json")]
    needed += [
        out_dir / "adapters" / t["name"] / "adapter_model.safetensors" for t in recipe["tunes"]
    ]
    ok = meta.get("inputs") == stamp and all(p.is_file() for p in needed)
    return meta if ok else None


def _build(
    tmp: Path, final: Path, recipe: dict[str, Any], demos: dict[str, list[Demonstration]], log: Log
) -> dict[str, Any]:
    from gateway.tunebuild.base import TrainSettings, train_base
    from gateway.tunebuild.lora import LoraSettings, train_lora
    from gateway.tunebuild.tokenizer import build_tokenizer

    threads, base, tok = int(recipe["threads"]), recipe["base"], recipe["tokenizer"]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tokenizer = build_tokenizer(
        [m.content for ds in demos.values() for d in ds for m in d.messages],
        vocab_size=int(tok["vocab_size"]),
        min_frequency=int(tok.get("min_frequency", 2)),
        special_tokens=tok["special_tokens"],
        model_max_length=int(base["config"]["max_position_embeddings"]),
    )
    timings["tokenizer"] = time.perf_counter() - t0
    log(f"tokenizer: {len(tokenizer)} tokens ({timings['tokenizer']:.1f}s)")
    # A LoRA trains neither embeddings nor output rows, so the base also reads the tunes'
    # answers as plain text (no chat template): it learns their words, not to say them in chat.
    tune_answers = (d.answer for t in recipe["tunes"] for d in demos[t["name"]])
    texts = list(dict.fromkeys(tune_answers)) if base.get("pretrain_on_tune_answers") else []
    arch = {**base["config"], "dtype": base.get("dtype", "float32")}
    settings = TrainSettings.from_spec(base["train"])
    t0 = time.perf_counter()
    base_loss = train_base(
        demos["base"],
        tokenizer,
        arch,
        settings,
        tmp / "base",
        texts=texts,
        threads=threads,
        log=log,
    )
    losses = {"base": base_loss}
    timings["base"] = time.perf_counter() - t0
    log(f"base model trained ({timings['base']:.1f}s)")
    for tune in recipe["tunes"]:
        name, spec = tune["name"], {**recipe["lora"], **tune}
        t0 = time.perf_counter()
        losses[name] = train_lora(
            name,
            demos[name],
            tmp / "base",
            LoraSettings.from_spec(spec),
            TrainSettings.from_spec(spec),
            tmp / "adapters" / name,
            threads=threads,
            base_model_name_or_path=str(final / "base"),
            log=log,
        )
        timings[name] = time.perf_counter() - t0
        log(f"tune {name} trained ({timings[name]:.1f}s)")
    return {"losses": losses, "timings": {k: round(v, 1) for k, v in timings.items()}}


def ensure_demo_build(
    out_dir: Path = DEFAULT_OUT,
    *,
    force: bool = False,
    log: Log = print,
    recipe_path: Path = DEFAULT_RECIPE,
) -> DemoBuild:
    """Return the demo build in `out_dir`, training it first unless its stamp matches the inputs.

    Concurrent callers serialise on a lock file next to `out_dir`; the build is written to a
    temporary sibling directory and swapped in whole, so a reader never sees half a build."""
    out_dir, recipe_path = Path(out_dir).resolve(), Path(recipe_path).resolve()
    recipe = load_recipe(recipe_path)
    stamp = inputs_hash(recipe_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (meta := _cached(out_dir, recipe, stamp)) is not None:
            return _describe(out_dir, recipe, False, meta)
        files = _data_files(recipe, recipe_path)
        demos = {name: load_demonstrations(path) for name, path in files.items()}
        log(f"building the demo model and tunes into {out_dir}")
        log("demonstrations: " + ", ".join(f"{k} {len(v)}" for k, v in demos.items()))
        start = time.perf_counter()
        tmp = out_dir.with_name(f".{out_dir.name}.building")
        old = out_dir.with_name(f".{out_dir.name}.old")
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            meta = _build(tmp, out_dir, recipe, demos, log)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        seconds = round(time.perf_counter() - start, 1)
        tunes = [t["name"] for t in recipe["tunes"]]
        meta = {"inputs": stamp, "seconds": seconds, "tunes": tunes, **meta}
        (tmp / STAMP).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        for path in tmp.rglob("*"):  # safetensors files are written 0600; readable like the rest
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
        log(f"demo build done in {seconds:.1f}s")
        return _describe(out_dir, recipe, True, meta)


def main_build(argv: Sequence[str] | None = None) -> int:
    """CLI: build the demo model and tunes unless up to date; 2 on bad data or recipe."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.tunebuild.demo",
        description="Build the demo base model and demo tunes (cached by an input hash).",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/demo")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="recipe.yaml")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        build = ensure_demo_build(
            args.out, force=args.force, recipe_path=args.recipe, log=lambda s: print(s, flush=True)
        )
    except (DemonstrationError, RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not build.built:
        print(f"demo build is up to date: {build.out_dir}")
    print(f"base: {build.base_dir}")
    for name, path in build.adapters.items():
        print(f"tune {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main_build())
