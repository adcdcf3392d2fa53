"""Incremental scanning of a streamed completion with a bounded hold-back window.

For any text and any split of it into deltas, the concatenated `emit`s (feeds plus
`finish()`) equal `scan(text).text` unless the stream is blocked; once blocked nothing
more is emitted, and no character of a blocked span was emitted before.

How: each rule's regex chain (`finditer` from 0, as `scan()` runs it) is advanced
incrementally.  A match attempt at position `s` is *final* once its outcome can no
longer change with more text: when `s + horizon <= len(known text)` (the regex cannot
look further), or when a character the rule can never match lies at or after `s`
(its charset "break").  Final matches are recorded; each rule's chain then resumes
after them.  Text before every rule's resume point is settled and is emitted with
redactions applied.  A redaction is emitted as its replacement as soon as its start
is settled (its replacement cannot change any more); the rest of its span, and any
overlapping span found later (merged, as `scan()` merges them), is then suppressed.
Only the text after the last emitted position (plus a few characters of look-behind
context) is kept and re-scanned, so the held-back text is at most the longest rule
horizon (~`max_window`) plus the latest delta.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.safety.detectors import Finding
from gateway.safety.rules import Detector, RuleSet
from gateway.safety.scanner import first_block, sort_findings


@dataclass(frozen=True)
class StreamStep:
    emit: str  # text safe to send to the client now (may be "")
    blocked: bool  # a block rule matched: send nothing more
    blocking_rule: str | None
    findings: tuple[Finding, ...]  # every finding settled so far, in text order


class StreamScanner:
    """Feed deltas, send each step's `emit`; call `finish()` at the end of the stream."""

    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._dets = rules.detectors
        self._buf = ""  # text not yet emitted, plus some context before it
        self._off = 0  # absolute position of _buf[0]
        self._emitted = 0  # absolute position up to which text has been emitted
        self._resume = [0] * len(self._dets)  # where each rule's match chain goes on
        self._breaks = [-1] * len(self._dets)  # last char each rule can never match
        self._pending: list[Finding] = []  # settled findings not yet emitted past
        self._found: list[Finding] = []
        self._found_sorted: tuple[Finding, ...] = ()  # `_found` in text order, kept current
        self._hide = 0  # positions before this are covered by an emitted redaction
        self._blocker: Finding | None = None
        self._finished = False

    @property
    def blocked(self) -> bool:
        return self._blocker is not None

    @property
    def held_back(self) -> int:
        """Characters received but not yet emitted."""
        return self._off + len(self._buf) - self._emitted

    def feed(self, delta: str) -> StreamStep:
        if self._finished:
            raise RuntimeError("StreamScanner.feed() called after finish()")
        if self._blocker is None and delta:
            self._append(delta)
            self._advance(final=False)
            return self._release(final=False)
        return self._step("")

    def finish(self) -> StreamStep:
        """Flush the held-back tail (scanned as the end of the text)."""
        if self._finished or self._blocker is not None:
            self._finished = True
            return self._step("")
        self._finished = True
        self._advance(final=True)
        return self._release(final=True)

    # --- internals -------------------------------------------------------------------

    def _append(self, delta: str) -> None:
        start = self._off + len(self._buf)
        self._buf += delta
        backwards = delta[::-1]
        for i, det in enumerate(self._dets):
            if det.breaker is not None:
                m = det.breaker.search(backwards)
                if m is not None:
                    self._breaks[i] = start + len(delta) - 1 - m.start()

    def _advance(self, final: bool) -> None:
        end = self._off + len(self._buf)
        for i, det in enumerate(self._dets):
            # attempts before `limit` can no longer change: past a break or the horizon
            limit = end + 1 if final else max(self._breaks[i] + 1, end - det.horizon + 1)
            self._resume[i] = self._chain(det, self._resume[i], limit, end)
        if self._blocker is None:
            self._blocker = first_block(sort_findings(self._pending, self._rules))

    def _chain(self, det: Detector, pos: int, limit: int, end: int) -> int:
        """Record the final matches from `pos`; return where the chain resumes."""
        for m in det.regex.finditer(self._buf, pos - self._off):
            if m.start() + self._off >= limit:
                break
            pos = m.end() + self._off
            finding = det.check(m, self._off)
            if finding is not None:
                self._pending.append(finding)
                self._found.append(finding)
                self._found_sorted = tuple(sort_findings(self._found, self._rules))
        return max(pos, min(limit, end))

    def _release(self, final: bool) -> StreamStep:
        if self._blocker is not None:
            return self._step("")
        end = self._off + len(self._buf)
        cut = end if final or not self._dets else min(self._resume)
        pending = sort_findings(self._pending, self._rules) if self._pending else []
        parts: list[str] = []
        for f in pending:
            if f.start >= cut:
                break
            if f.action != "redact":
                continue
            if f.start < self._hide:  # overlaps the group being hidden: extend it
                self._hide = max(self._hide, f.end)
                continue
            parts.append(self._source(max(self._emitted, self._hide), f.start))
            parts.append(self._rules.replacements[f.rule_id])
            self._hide = f.end
        parts.append(self._source(max(self._emitted, self._hide), cut))
        self._emitted = cut
        self._pending = [f for f in pending if f.start >= cut]
        keep = max(self._off, cut - self._rules.context)
        self._buf = self._buf[keep - self._off :]
        self._off = keep
        return self._step("".join(parts))

    def _source(self, start: int, end: int) -> str:
        """Received text between two absolute positions ("" when empty)."""
        return self._buf[start - self._off : end - self._off] if start < end else ""

    def _step(self, emit: str) -> StreamStep:
        blocker = self._blocker
        return StreamStep(
            emit=emit,
            blocked=blocker is not None,
            blocking_rule=blocker.rule_id if blocker else None,
            findings=self._found_sorted,
        )
