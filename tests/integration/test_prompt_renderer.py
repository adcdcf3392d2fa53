"""The renderer's fast path (the Rust backend called directly) gives the wrapper's ids."""

from __future__ import annotations

import pytest

from gateway.engine.prompts import PromptRenderer

TEXTS = [
    "hello there",
    "My order has not arrived yet. What should I do?",
    "ümlaut 日本語 emoji 🎉 <|end|> tabs\t\tand\n\nnewlines  ",
    " leading and trailing spaces ",
    "",
]


@pytest.fixture(scope="module")
def renderer(demo_build):
    return PromptRenderer.from_pretrained(demo_build / "base")


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
