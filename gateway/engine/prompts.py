"""Prompt rendering with the served model's own tokenizer and chat template.

Tokenizing holds the interpreter for as long as it runs: about 0.3 µs a character on the bench
VM, so a 100,000-character prompt would stop every other request (streams included) for some
30 ms. A prompt longer than `INLINE_CHARS` is tokenized on a worker thread instead, through the
tokenizer's batch call, which lets the interpreter go while its Rust code runs; a short one is
tokenized in place, where it costs less than the hand-off to a thread would.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["INLINE_CHARS", "PromptRenderer", "RendersPrompts"]

INLINE_CHARS = 2048  # longer prompts are tokenized off the event loop
TOKENIZER_THREADS = 2  # prompts tokenized at once off the loop; more wait their turn


class PromptRenderer:
    """Turns chat messages or a completion prompt into token ids for the engine."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        # The fast tokenizer's Rust backend, called directly: the same ids without the Python
        # layers (and the batch call) the transformers wrapper puts around it.
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._threads: ThreadPoolExecutor | None = None

    @classmethod
    def from_pretrained(cls, path: Path) -> PromptRenderer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path)))

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        return self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return self.encode(self.chat_text(messages))

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(self._tok.encode(text, add_special_tokens=False))

    async def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """`render_chat`, with a long prompt tokenized off the event loop."""
        return await self.tokenize(self.chat_text(messages))

    async def tokenize(self, text: str) -> list[int]:
        """`encode`, with a long text tokenized off the event loop."""
        if len(text) <= INLINE_CHARS or self._backend is None:
            return self.encode(text)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(TOKENIZER_THREADS, "tunegate-tokenize")
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._encode_unlocked, text
        )

    def _encode_unlocked(self, text: str) -> list[int]:
        # The batch call releases the interpreter lock while it tokenizes (`encode` keeps it);
        # `_fast` (tokenizers 0.21 and later) leaves out the character offsets, unread here.
        batch = getattr(self._backend, "encode_batch_fast", None) or self._backend.encode_batch
        return batch([text], add_special_tokens=False)[0].ids

    def close(self) -> None:
        """Stop the tokenizing threads (a prompt being tokenized is finished first)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

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

    def encode(self, text: str) -> list[int]:
        return self._renderer().encode(text)

    def _close_prompts(self) -> None:
        if self._prompts is not None:
            self._prompts.close()

    async def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return await self._renderer().tokenize_chat(messages)

    async def tokenize(self, text: str) -> list[int]:
        return await self._renderer().tokenize(text)

    @property
    def vocab_size(self) -> int:
        return self._renderer().vocab_size

    @property
    def max_token_chars(self) -> int:
        return self._renderer().max_token_chars
