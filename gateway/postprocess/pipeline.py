"""The answer's way out: output safety (incremental, with hold-back), then formatting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.postprocess.formatting import FormatProfile, Formatter

if TYPE_CHECKING:
    from gateway.safety import RuleSet

__all__ = ["OutputPipeline", "Step"]


@dataclass(frozen=True, slots=True)
class Step:
    emit: str
    finish_reason: str | None = None  # set when post-processing ends the answer early


@dataclass
class OutputPipeline:
    """Feed engine deltas in; get out only what may reach the client."""

    rules: RuleSet | None = None
    profile: FormatProfile | None = None
    findings: list[str] = field(default_factory=list)
    on_finding: Callable[[str, str], None] = lambda rule, action: None
    _scanner: object = None
    _formatter: Formatter | None = None
    _ended: str | None = None
    _fed: bool = False

    def __post_init__(self) -> None:
        if self.rules is not None and self.rules.detectors:
            from gateway.safety import StreamScanner

            self._scanner = StreamScanner(self.rules)
        if self.profile is not None:
            self._formatter = Formatter(self.profile)

    @property
    def active(self) -> bool:
        return self._scanner is not None or self._formatter is not None

    def _note(self, step: object) -> None:
        for finding in getattr(step, "findings", ()):
            if finding.rule_id not in self.findings:
                self.findings.append(finding.rule_id)
                self.on_finding(finding.rule_id, finding.action)

    def _format(self, text: str) -> Step:
        if self._formatter is None:
            return Step(text)
        out = self._formatter.feed(text)
        if self._formatter.capped and self._ended is None:
            self._ended = "length"
            return Step(out + self._formatter.finish(), "length")
        return Step(out)

    def feed(self, delta: str) -> Step:
        self._fed = True
        if self._ended is not None:
            return Step("", self._ended)
        if self._scanner is not None:
            step = self._scanner.feed(delta)  # type: ignore[attr-defined]
            self._note(step)
            if step.blocked:
                self._ended = "content_filter"
                return Step("", "content_filter")
            delta = step.emit
        return self._format(delta)

    def whole(self, text: str) -> Step:
        """A whole answer at once, instead of `feed` and `finish`: the same text, finish reason
        and findings (noted in text order; the incremental way notes them as it settles them).

        Unless the answer is blocked, the stream scanner's text is the whole text's scan (its
        contract), so that is what runs: one pass per rule rather than the incremental
        scanner's bookkeeping, a third of its cost on a short answer. A blocked answer, or one
        the format profile cuts at its length, goes the incremental way after all: which
        findings are noted, and what came before a block, depend on where the scanner had
        settled. Only before any `feed`."""
        if self._fed:
            raise RuntimeError("OutputPipeline.whole() after feed()")
        if self._scanner is None or self.rules is None:
            return self._incrementally(text)
        from gateway.safety import scan

        result = scan(text, self.rules)
        if result.blocked:
            return self._incrementally(text)
        self._fed = True
        step = self._format_last(result.text)
        if step.finish_reason is not None:  # cut at max_chars
            self._formatter = Formatter(self.profile)  # type: ignore[arg-type]
            self._ended = None
            return self._incrementally(text)
        self._note(result)
        return step

    def _incrementally(self, text: str) -> Step:
        step = self.feed(text)
        if step.finish_reason is not None:
            return step
        tail = self.finish()
        return Step(step.emit + tail.emit, tail.finish_reason)

    def finish(self) -> Step:
        """The engine is done: flush what was held back and add what the profile requires."""
        if self._ended is not None:
            return Step("", self._ended)
        tail = ""
        if self._scanner is not None:
            step = self._scanner.finish()  # type: ignore[attr-defined]
            self._note(step)
            if step.blocked:
                self._ended = "content_filter"
                return Step("", "content_filter")
            tail = step.emit
        return self._format_last(tail)

    def _format_last(self, text: str) -> Step:
        """The answer's last text formatted, with what the profile adds at the end."""
        formatted = self._format(text)
        if formatted.finish_reason is not None:
            return formatted
        end = self._formatter.finish() if self._formatter is not None else ""
        return Step(formatted.emit + end)
