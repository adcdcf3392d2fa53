"""The renderer's fast paths (the Rust backend called directly, long prompts tokenized off the
event loop) give the wrapper's ids."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from gateway.engine.prompts import INLINE_CHARS, PromptRenderer

TEXTS = [
    "hello there",
    "My order has not arrived yet. What should I do?",
    "ümlaut 日本語 emoji 🎉 <|end|> tabs\t\tand\n\nnewlines  ",
    " leading and trailing spaces ",
    "",
]


@pytest.fixture(scope="module")
def renderer(demo_build):
    renderer = PromptRenderer.from_pretrained(demo_build / "base")
    yield renderer
    renderer.close()


@pytest.mark.parametrize("text", TEXTS)
def test_fast_encode_matches_the_tokenizer(renderer, text):
    assert renderer._backend is not None
    assert renderer.encode(text) == list(renderer._tok.encode(text, add_special_tokens=False))


def test_chat_rendering_matches_the_tokenizer(renderer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXTS[2]}]
    expected = renderer._tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True
    )
    if isinstance(expected, dict) or hasattr(expected, "input_ids"):
        expected = expected["input_ids"]
    assert renderer.render_chat(messages) == list(expected)


LONG_TEXTS = [text * (INLINE_CHARS // max(1, len(text)) + 2) for text in TEXTS if text]


@pytest.mark.parametrize("text", LONG_TEXTS)
async def test_a_long_text_tokenized_off_the_loop_gets_the_same_ids(renderer, text):
    assert len(text) > INLINE_CHARS
    assert await renderer.tokenize(text) == renderer.encode(text)


async def test_a_long_chat_tokenized_off_the_loop_gets_the_same_ids(renderer):
    messages = [
        {"role": "system", "content": "Be brief. " * 300},
        {"role": "user", "content": LONG_TEXTS[2]},
    ]
    assert await renderer.tokenize_chat(messages) == renderer.render_chat(messages)


async def test_the_event_loop_runs_while_a_long_prompt_is_tokenized(renderer):
    text = "My order has not arrived yet. What should I do? " * 20_000  # about a million chars
    start = time.perf_counter()
    tokenizing = asyncio.ensure_future(renderer.tokenize(text))
    turns = [start]  # each time the loop came back to this task before the ids were in
    while not tokenizing.done():
        await asyncio.sleep(0)
        turns.append(time.perf_counter())
    took = turns[-1] - start
    longest = max(b - a for a, b in itertools.pairwise(turns))
    # Tokenized in place, or on a thread that kept the interpreter, the loop would wait out
    # (nearly) all of it at once.
    assert longest < took / 2
    assert await tokenizing == renderer.encode(text)


async def test_a_short_prompt_is_tokenized_in_place(demo_build):
    fresh = PromptRenderer.from_pretrained(demo_build / "base")
    try:
        assert await fresh.tokenize(TEXTS[1]) == fresh.encode(TEXTS[1])
        assert await fresh.tokenize_chat([{"role": "user", "content": TEXTS[1]}])
        assert fresh._threads is None  # no hand-off to a thread for it
        await fresh.tokenize("x" * (INLINE_CHARS + 1))
        assert fresh._threads is not None
    finally:
        fresh.close()
    assert fresh._threads is None
