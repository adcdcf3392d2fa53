"""Whole-text scanning and applying the rules' actions.

Findings carry rule ids and offsets only, never the matched text, so they are safe to
log.  Overlapping findings: any "block" finding blocks; "redact" spans that overlap
(share at least one character) are merged into one group, replaced by the replacement
of the group's first finding (earliest start, then rule order); "flag" findings leave
the text alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.safety.detectors import Finding
from gateway.safety.rules import RuleSet


@dataclass(frozen=True)
class ScanResult:
    text: str  # the text after redactions
    findings: tuple[Finding, ...]  # every finding, in text order
    blocked: bool  # whether any finding has action "block"
    blocking_rule: str | None  # the rule id of the first blocking finding


@dataclass(frozen=True)
class Group:
    """A merged run of overlapping redactions."""

    start: int
    end: int
    replacement: str


def sort_findings(findings: Iterable[Finding], rules: RuleSet) -> list[Finding]:
    order = rules.order
    return sorted(findings, key=lambda f: (f.start, f.end, order.get(f.rule_id, 0)))


def find_all(text: str, rules: RuleSet) -> list[Finding]:
    """Every finding of every rule over a whole text, in text order."""
    found: list[Finding] = []
    for det in rules.detectors:
        for m in det.regex.finditer(text):
            finding = det.check(m)
            if finding is not None:
                found.append(finding)
    return sort_findings(found, rules)


def first_block(findings: Iterable[Finding]) -> Finding | None:
    return next((f for f in findings if f.action == "block"), None)


def redaction_groups(findings: Iterable[Finding], rules: RuleSet) -> list[Group]:
    """Merge overlapping redactions; `findings` must be in text order."""
    groups: list[Group] = []
    for f in findings:
        if f.action != "redact":
            continue
        if groups and f.start < groups[-1].end:
            last = groups[-1]
            groups[-1] = Group(last.start, max(last.end, f.end), last.replacement)
        else:
            groups.append(Group(f.start, f.end, rules.replacements[f.rule_id]))
    return groups


def render(text: str, offset: int, start: int, end: int, groups: Iterable[Group]) -> str:
    """`text[start:end]` (absolute positions; `text` begins at `offset`) with the
    groups lying inside that range replaced."""
    parts: list[str] = []
    pos = start
    for g in groups:
        if g.start < start or g.end > end:
            continue
        parts.append(text[pos - offset : g.start - offset])
        parts.append(g.replacement)
        pos = g.end
    parts.append(text[pos - offset : end - offset])
    return "".join(parts)


def scan(text: str, rules: RuleSet) -> ScanResult:
    """Scan a whole text: report findings, apply redactions, say whether it is blocked."""
    findings = find_all(text, rules)
    blocker = first_block(findings)
    groups = redaction_groups(findings, rules)
    return ScanResult(
        text=render(text, 0, 0, len(text), groups),
        findings=tuple(findings),
        blocked=blocker is not None,
        blocking_rule=blocker.rule_id if blocker else None,
    )
