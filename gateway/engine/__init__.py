"""The `Engine` boundary: the only way the gateway reaches a model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from gateway.engine.types import Adapter, EngineRequest, EngineStats, FinishReason, Output

__all__ = ["Adapter", "Engine", "EngineRequest", "EngineStats", "FinishReason", "Output"]


class Engine(Protocol):
    """What the gateway needs of a model server. `VLLMEngine` is the in-process default."""

    on_evict: Callable[[Adapter], None]  # told when the engine drops an adapter to make room
    on_load: Callable[[Adapter, float], None]  # told when an adapter is loaded, and how long
    # True when a request marked `whole` is answered in one output (a remote server asked for
    # the whole answer): the gateway then has no first output to time before the last.
    answers_whole: bool

    @property
    def ready(self) -> bool: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    async def start(self, warm_adapters: Sequence[Adapter] = ()) -> None: ...

    async def stop(self) -> None: ...

    async def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat rendered with the model's template, as token ids."""
        ...

    async def tokenize(self, text: str) -> list[int]: ...

    def stream(self, request: EngineRequest) -> AsyncIterator[Output]:
        """Yield outputs (text deltas) until one carries a finish reason."""
        ...

    async def load_adapter(self, adapter: Adapter) -> bool:
        """Load once (idempotent); True when this call loaded it."""
        ...

    async def unload_adapter(self, adapter: Adapter) -> None: ...

    async def loaded_adapters(self) -> set[int]: ...

    async def health(self) -> bool: ...

    def stats(self) -> EngineStats: ...
