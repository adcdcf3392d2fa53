"""`OutputPipeline.whole`: a whole answer at once gives what feeding it and finishing gives."""

from __future__ import annotations

import random

import pytest

from gateway.postprocess import OutputPipeline
from gateway.postprocess.formatting import FormatProfile
from gateway.safety import compile_rules, scan
from tests.unit.test_safety_stream import ALL_KINDS, SECRETS, rule

FILLER = [
    "Hello there.",
    "  spaced   out  ",
    "\n\n\n",
    "Paris is nice.",
    "c++ and foo12 ",
    "w0 w1 w2",
]
PROFILES = [
    None,
    FormatProfile(disclaimer="Not legal advice.", normalize_whitespace=True),
    FormatProfile(max_chars=25),
]


def texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces = [*SECRETS.values(), *FILLER]
    return [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(60)]


def rule_sets():
    rng = random.Random(3)
    for _ in range(6):
        kinds = rng.sample(ALL_KINDS, rng.randint(1, 5))
        yield compile_rules(
            [rule(k, rng.choice(["redact", "flag", "block"]), f"r{i}") for i, k in enumerate(kinds)]
        )
    yield compile_rules([rule(k, "redact", f"r{i}") for i, k in enumerate(ALL_KINDS)])


def outcome(pipeline: OutputPipeline, text: str, whole: bool):
    if whole:
        step = pipeline.whole(text)
        emitted, finish = step.emit, step.finish_reason
    else:
        first = pipeline.feed(text)
        if first.finish_reason is not None:
            emitted, finish = first.emit, first.finish_reason
        else:
            last = pipeline.finish()
            emitted, finish = first.emit + last.emit, last.finish_reason
    return emitted, finish, sorted(pipeline.findings)  # noted in text order when whole


@pytest.mark.parametrize("profile", PROFILES, ids=["no-profile", "disclaimer", "capped"])
@pytest.mark.parametrize("seed", [1, 2])
def test_whole_gives_what_feed_and_finish_give(profile, seed):
    blocked = 0
    for rules in rule_sets():
        for text in texts(seed):
            noted: list[tuple[str, str]] = []
            a = OutputPipeline(rules, profile, on_finding=lambda r, a, n=noted: n.append((r, a)))
            b = OutputPipeline(rules, profile)
            got, expected = outcome(a, text, True), outcome(b, text, False)
            assert got == expected, text
            assert sorted(r for r, _ in noted) == got[2]
            if got[1] is None and a.findings:  # by the one scan: in text order
                order = [f.rule_id for f in scan(text, rules).findings]
                assert a.findings == sorted(set(order), key=order.index)
            blocked += got[1] == "content_filter"
    assert blocked  # the blocked way was taken too


def test_whole_without_rules_or_profile_passes_the_text():
    assert OutputPipeline().whole("as is  ").emit == "as is  "


def test_whole_only_before_feed():
    pipeline = OutputPipeline(compile_rules([rule("email", "redact")]))
    pipeline.feed("a")
    with pytest.raises(RuntimeError):
        pipeline.whole("b")
