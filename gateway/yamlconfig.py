"""Load operator YAML files into pydantic models with errors that name file, field and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "field_line", "load_yaml_model"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A declarative file (tune manifest, policy) is missing, malformed or invalid."""

    def __init__(
        self, path: Path, message: str, *, field: str | None = None, line: int | None = None
    ):
        self.path = path
        self.field = field
        self.line = line
        where = str(path) + (f":{line}" if line else "")
        what = f"field `{field}`: " if field else ""
        super().__init__(f"{where}: {what}{message}")


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree; 1-based line or None."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        best = node.start_mark.line + 1
    return best


def load_yaml_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Parse `path` as YAML and validate it as `model`, raising `ConfigError` on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read file ({exc.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(path, f"invalid YAML: {problem}", line=line) from None
    if data is None:
        data = {}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or None
        raise ConfigError(path, err["msg"], field=field, line=_line_of(node, loc)) from None


def field_line(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of a field in a YAML file already known to parse."""
    try:
        return _line_of(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), loc)
    except (OSError, yaml.YAMLError):
        return None
