"""Load and validate chat-format instruction demonstrations (JSONL).

One demonstration per line: ``{"messages": [{"role": ..., "content": ...}, ...]}``. An optional
system message comes first, then user and assistant turns alternate, starting with the user and
ending with the assistant (the answer that is trained). Blank lines are skipped. Every problem in
a file is collected and raised together as one :class:`DemonstrationError` naming the file and the
line numbers, so a bad edit reads as a list of fixes rather than a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ROLES",
    "Demonstration",
    "DemonstrationError",
    "Message",
    "load_demonstrations",
    "parse_demonstration",
]

ROLES = ("system", "user", "assistant")
MAX_REPORTED = 20


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Demonstration:
    messages: tuple[Message, ...]
    source: str
    line: int

    @property
    def answer(self) -> str:
        return self.messages[-1].content

    def as_chat(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]


class DemonstrationError(ValueError):
    """One or more demonstrations in a file are malformed."""

    def __init__(self, path: str | Path, problems: Sequence[tuple[int, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        shown = [
            f"{self.path}:{line}: {msg}" if line else f"{self.path}: {msg}"
            for line, msg in self.problems[:MAX_REPORTED]
        ]
        if len(self.problems) > MAX_REPORTED:
            shown.append(f"... and {len(self.problems) - MAX_REPORTED} more problems")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} {noun} in {self.path}:\n" + "\n".join(shown))

    @property
    def lines(self) -> list[int]:
        return [line for line, _ in self.problems]


def parse_demonstration(obj: object) -> tuple[list[Message], list[str]]:
    """Check one decoded JSON value; return (messages, problems)."""
    if not isinstance(obj, dict):
        return [], [f"expected a JSON object with a 'messages' list, got {type(obj).__name__}"]
    raw = obj.get("messages")
    if not isinstance(raw, list) or not raw:
        return [], ["'messages' must be a non-empty list"]
    problems: list[str] = []
    messages: list[Message] = []
    for i, msg in enumerate(raw, start=1):
        if not isinstance(msg, dict):
            problems.append(f"message {i} is not an object")
            continue
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            problems.append(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
            continue
        if not isinstance(content, str):
            problems.append(f"message {i} ({role}) has no string 'content'")
            continue
        messages.append(Message(role, content))
    if problems:
        return messages, problems
    turns = messages[1:] if messages[0].role == "system" else messages
    if any(m.role == "system" for m in turns):
        problems.append("a system message may only come first")
    elif not turns:
        problems.append("no user/assistant turns")
    else:
        for i, m in enumerate(turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if m.role != expected:
                problems.append(
                    f"turn {i + 1} is {m.role!r}; expected {expected!r} "
                    "(user and assistant must alternate, starting with user)"
                )
                break
        else:
            if turns[-1].role != "assistant":
                problems.append("the last message must be the assistant's answer")
    for m in turns:
        if not m.content.strip():
            what = "empty answer" if m.role == "assistant" else f"empty {m.role} message"
            problems.append(what)
            break
    return messages, problems


def load_demonstrations(path: str | Path) -> list[Demonstration]:
    """Read and validate a JSONL file; raise DemonstrationError listing every bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DemonstrationError(path, [(0, "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise DemonstrationError(path, [(0, f"not UTF-8 text ({exc.reason})")]) from None
    demos: list[Demonstration] = []
    problems: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((lineno, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        messages, found = parse_demonstration(obj)
        if found:
            problems.extend((lineno, msg) for msg in found)
        else:
            demos.append(Demonstration(tuple(messages), str(path), lineno))
    if not demos and not problems:
        problems.append((0, "no demonstrations (the file is empty)"))
    if problems:
        raise DemonstrationError(path, problems)
    return demos
