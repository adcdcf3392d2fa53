"""Prompt rendering with the served model's own tokenizer and chat template."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

__all__ = ["PromptRenderer", "RendersPrompts"]


class PromptRenderer:
    """Turns chat messages or a completion prompt into token ids for the engine."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        # The fast tokenizer's Rust backend, called directly: the same ids without the Python
        # layers (and the batch call) the transformers wrapper puts around it.
        self._backend = getattr(tokenizer, "backend_tokenizer", None)

    @classmethod
    def from_pretrained(cls, path: Path) -> PromptRenderer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path)))

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(self._tok.encode(text, add_special_tokens=False))

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters one token stands for: a prompt longer than this many times
        the token limit is over it for certain, without tokenizing it."""
        return max((len(self._tok.convert_tokens_to_string([t])) for t in self._tok.get_vocab()),
                   default=1)  # fmt: skip


class RendersPrompts:
    """What every engine does with the served model's tokenizer (`self._prompts`, loaded by
    the engine's `start()`): chat rendering, encoding and the vocabulary's figures."""

    _prompts: PromptRenderer | None = None

    def _renderer(self) -> PromptRenderer:
        if self._prompts is None:
            from gateway.errors import EngineUnavailableError

            raise EngineUnavailableError(
                "The engine is starting; try again shortly.", headers={"Retry-After": "5"}
            )
        return self._prompts

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return self._renderer().render_chat(messages)

    def encode(self, text: str) -> list[int]:
        return self._renderer().encode(text)

    @property
    def vocab_size(self) -> int:
        return self._renderer().vocab_size

    @property
    def max_token_chars(self) -> int:
        return self._renderer().max_token_chars
