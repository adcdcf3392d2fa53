"""Prompt rendering with the served model's own tokenizer and chat template."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

__all__ = ["PromptRenderer"]


class PromptRenderer:
    """Turns chat messages or a completion prompt into token ids for the engine."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer

    @classmethod
    def from_pretrained(cls, path: Path) -> PromptRenderer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path)))

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
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
