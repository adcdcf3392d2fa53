"""Train one demo LoRA adapter (a "tune") on top of the demo base model with peft."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gateway.tunebuild.base import TrainSettings, seed_everything, train_loop
from gateway.tunebuild.data import Demonstration
from gateway.tunebuild.tokenizer import encode_demonstrations

__all__ = ["LoraSettings", "train_lora"]

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LoraSettings:
    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    dropout: float = 0.0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LoraSettings:
        return cls(
            rank=int(spec["rank"]),
            alpha=int(spec["alpha"]),
            target_modules=tuple(str(m) for m in spec["target_modules"]),
            dropout=float(spec.get("dropout", 0.0)),
        )


def train_lora(
    name: str,
    demos: Sequence[Demonstration],
    base_dir: Path,
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: Path,
    *,
    threads: int,
    base_model_name_or_path: str | None = None,
    log: Log = print,
) -> float:
    """Train an adapter for tune `name` and save it as a peft adapter directory (what vLLM's
    LoRARequest loads). `base_model_name_or_path` is written into adapter_config.json (default:
    `base_dir`). Returns the final training loss."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seed_everything(settings.seed, threads)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    examples = encode_demonstrations(
        demos,
        tokenizer,
        max_seq_len=settings.max_seq_len,
        loss_on_prompt=settings.loss_on_prompt,
        log=log,
    )
    count = sum(p.numel() for p in params)
    log(f"  {name}: {count:,} trainable parameters, {len(examples)} demonstrations")
    pad = tokenizer.pad_token_id
    loss = train_loop(model, params, examples, settings, pad_id=pad, label=name, log=log)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_model_name_or_path or str(base_dir)
    cfg["target_modules"] = sorted(cfg["target_modules"])  # peft writes a set's order
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model card
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return loss
