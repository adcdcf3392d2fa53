"""Build and train the tiny demo base model (a Llama), plus the training loop the tunes share."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from gateway.tunebuild.data import Demonstration
from gateway.tunebuild.tokenizer import Example, encode_demonstrations, encode_texts

__all__ = ["TrainSettings", "seed_everything", "train_base", "train_loop"]

Log = Callable[[str], None]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True, slots=True)
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    max_seq_len: int = 128
    warmup_steps: int = 20
    weight_decay: float = 0.0
    min_lr_ratio: float = 0.1
    loss_on_prompt: bool = False
    log_every: int = 100

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TrainSettings:
        """Pick this class's fields out of a recipe mapping, cast to the declared types."""
        casts = {"int": int, "float": float, "bool": bool}
        return cls(
            **{f.name: casts[str(f.type)](spec[f.name]) for f in fields(cls) if f.name in spec}
        )


def seed_everything(seed: int, threads: int) -> None:
    """Fixed seeds, fixed thread count and deterministic kernels: same inputs, same weights."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _epoch(examples: Sequence[Example], size: int, rng: random.Random) -> list[list[int]]:
    """One shuffled pass in batches of similar length (less padding, same data per epoch)."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), size * 8):
        pool = sorted(order[start : start + size * 8], key=lambda i: len(examples[i].input_ids))
        batches += [pool[i : i + size] for i in range(0, len(pool), size)]
    rng.shuffle(batches)
    return batches


def _batches(examples: Sequence[Example], settings: TrainSettings, pad: int) -> Iterator[Batch]:
    rng = random.Random(settings.seed)
    queue: list[list[int]] = []
    for _ in range(settings.steps):
        if not queue:
            queue = _epoch(examples, settings.batch_size, rng)
        chosen = [examples[i] for i in queue.pop()]
        width = max(len(e.input_ids) for e in chosen)
        ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        labels = torch.full((len(chosen), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, ex in enumerate(chosen):
            n = len(ex.input_ids)
            ids[row, :n] = torch.tensor(ex.input_ids)
            labels[row, :n] = torch.tensor(ex.labels)
            mask[row, :n] = 1
        yield ids, labels, mask


def train_loop(
    model: Any,
    params: Sequence[torch.nn.Parameter],
    examples: Sequence[Example],
    settings: TrainSettings,
    *,
    pad_id: int,
    label: str,
    log: Log = print,
) -> float:
    """AdamW with linear warmup and cosine decay; returns the mean loss of the last 50 steps."""
    s = settings
    opt = torch.optim.AdamW(params, lr=s.lr, betas=(0.9, 0.95), weight_decay=s.weight_decay)

    def lr_at(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    recent: list[float] = []
    for step, (ids, labels, mask) in enumerate(_batches(examples, s, pad_id), start=1):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = [*recent, loss.item()][-50:]
        if step % s.log_every == 0 or step == s.steps:
            log(f"  {label}: step {step}/{s.steps} loss {sum(recent) / len(recent):.3f}")
    model.eval()
    return sum(recent) / len(recent)


def train_base(
    demos: Sequence[Demonstration],
    tokenizer: Any,
    arch: Mapping[str, Any],
    settings: TrainSettings,
    out_dir: Path,
    *,
    texts: Sequence[str] = (),
    threads: int,
    log: Log = print,
) -> float:
    """Initialise a LlamaForCausalLM from `arch` (LlamaConfig keywords), train it on `demos`
    (chat) plus `texts` (plain text), save model, generation config and tokenizer to `out_dir`
    (a directory vLLM and transformers load). Returns the final training loss."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    seed_everything(settings.seed, threads)
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **special, **arch))
    model = model.to(torch.float32)
    n = settings.max_seq_len
    examples = encode_demonstrations(
        demos, tokenizer, max_seq_len=n, loss_on_prompt=settings.loss_on_prompt, log=log
    )
    count = sum(p.numel() for p in model.parameters())
    log(f"  base: {count:,} parameters, {len(examples)} demonstrations, {len(texts)} texts")
    examples += encode_texts(texts, tokenizer, max_seq_len=n)
    params = list(model.parameters())
    pad = tokenizer.pad_token_id
    loss = train_loop(model, params, examples, settings, pad_id=pad, label="base", log=log)
    model.generation_config = GenerationConfig(**special)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return loss
