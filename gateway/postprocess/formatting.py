"""Format profiles (per tune or tenant): JSON schema, disclaimer, whitespace, length cap."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["FormatProfile", "Formatter"]

_SPACES = re.compile(r"[ \t]+")
_BLANKS = re.compile(r"\n{3,}")


class FormatProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: dict[str, Any] | None = None
    disclaimer: str | None = Field(None, min_length=1, max_length=1000)
    normalize_whitespace: bool = False
    max_chars: int | None = Field(None, ge=1)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"invalid JSON schema: {exc.message}") from None
        return value

    def merged(self, over: FormatProfile | None) -> FormatProfile:
        """`over` (the tenant's) wins field by field where it sets a field."""
        if over is None:
            return self
        data = self.model_dump()
        data.update({k: getattr(over, k) for k in over.model_fields_set})
        return FormatProfile(**data)


class Formatter:
    """Streaming-safe formatting: trailing whitespace is held until the next word arrives."""

    def __init__(self, profile: FormatProfile) -> None:
        self.profile = profile
        self._held = ""
        self._started = False
        self.emitted = 0
        self.capped = False
        self.text: list[str] = []

    def feed(self, delta: str) -> str:
        if self.capped or not delta:
            return ""
        if self.profile.normalize_whitespace:
            pending = self._held + delta
            stripped = pending.rstrip()
            self._held = pending[len(stripped) :]
            if not self._started:
                stripped = stripped.lstrip()
                self._started = bool(stripped)
            delta = _BLANKS.sub("\n\n", _SPACES.sub(" ", stripped))
        return self._cap(delta)

    def _cap(self, delta: str) -> str:
        limit = self.profile.max_chars
        if limit is not None and self.emitted + len(delta) > limit:
            delta = delta[: limit - self.emitted]
            self.capped = True
        self.emitted += len(delta)
        self.text.append(delta)
        return delta

    def finish(self) -> str:
        """What to send last: the disclaimer, when the answer does not already carry it."""
        self._held = ""  # trailing whitespace is dropped when normalizing
        disclaimer = self.profile.disclaimer
        if disclaimer and disclaimer not in "".join(self.text):
            return ("\n\n" if self.emitted else "") + disclaimer
        return ""
