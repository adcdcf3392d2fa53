"""Internal engine types: what the gateway asks of an engine and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Adapter", "EngineRequest", "EngineStats", "FinishReason", "Output"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Adapter:
    """A catalogued tune as the engine sees it: a LoRA adapter with a stable id."""

    name: str
    adapter_id: int
    path: Path


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    adapter: Adapter | None = None
    structured: dict[str, Any] | None = None  # {"json": schema} or {"json_object": True}
    trace_headers: dict[str, str] | None = None  # W3C trace context for a remote engine
    logit_bias: dict[int, float] | None = None
    cache_salt: str | None = None  # set by the gateway per tenant, never by a client
    whole: bool = False  # only the finished answer is wanted: one output may carry all of it

    @property
    def reserved_tokens(self) -> int:
        """What the tenant's token limit is charged at admission: the prompt and the most the
        answer may take."""
        return len(self.prompt_token_ids) + self.max_tokens


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The engine's own view of its load (from its scheduler), read at scrape time."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0  # 0 to 1
    adapters_resident: int = 0


@dataclass(slots=True)
class Output:
    """One step of a generation: the new text since the last step, and running counts."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: FinishReason | None = None
    extra: dict[str, object] = field(default_factory=dict)
