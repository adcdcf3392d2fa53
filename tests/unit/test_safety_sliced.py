"""Long input scanned in slices, the event loop let run between them: `scan()`'s result."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.safety import compile_rules, scan
from gateway.safety.sliced import scan_in_slices
from tests.unit.test_safety_stream import ALL_KINDS, PIECES, SECRETS, rule


@pytest.mark.parametrize("seed", range(3))
async def test_any_slicing_gives_the_whole_scan(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(120):
        rules = compile_rules([rule(k, rng.choice(["redact", "flag", "block"])) for k in ALL_KINDS])
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30)))
        size = rng.choice([1, 3, 7, 16, 64, 256])
        assert await scan_in_slices(text, rules, size) == scan(text, rules), (text, size)


async def test_a_blocked_text_names_the_first_blocking_rule_in_text_order() -> None:
    # In a stream the card's rule settles first (the injection phrase could still grow), so the
    # stream would name it; scan() names the phrase, which comes first in the text.
    rules = compile_rules([rule("prompt_injection", "block"), rule("payment_card", "block")])
    text = "start " + SECRETS["prompt_injection"] + " " + SECRETS["payment_card"] + " end"
    whole = scan(text, rules)
    assert whole.blocking_rule == "prompt_injection"
    assert await scan_in_slices(text, rules, 1) == whole


async def test_the_event_loop_runs_between_slices() -> None:
    rules = compile_rules([rule(kind, "redact") for kind in ALL_KINDS])
    text = "ordinary words and " * 500 + SECRETS["email"]
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count())
    await asyncio.sleep(0)
    turns = 0
    result = await scan_in_slices(text, rules, 1000)
    counter.cancel()
    assert turns >= len(text) // 1000  # the loop ran after every slice
    assert result == scan(text, rules) and SECRETS["email"] not in result.text
    turns = 0
    counter = asyncio.ensure_future(count())
    await asyncio.sleep(0)
    turns = 0
    assert await scan_in_slices("short", rules, 1000) == scan("short", rules)
    counter.cancel()
    assert turns == 0  # a short text is scanned at once
