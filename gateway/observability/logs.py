"""Structured logs: one JSON object per line, the request id bound, secrets scrubbed.

The request id lives in a context variable set by the request-id middleware, so every line
logged while a request is handled carries it. Prompts and answers are never logged by the
gateway; as a second line of defence a filter replaces anything shaped like a Tunegate key, a
bearer token or a `sk-` style key in the message and its arguments.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import re
from typing import Any

__all__ = ["configure_logging", "log_config", "request_id_var", "scrub"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tunegate_request_id", default=None
)

SECRET_SHAPES = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"  # an Authorization header value
    r"|\btg-[A-Za-z0-9_-]{16,}"  # a Tunegate API key
    r"|\bsk-[A-Za-z0-9_-]{16,}"  # an upstream provider key
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # a JWT
)


def scrub(text: str) -> str:
    return SECRET_SHAPES.sub("[SECRET]", text)


class ContextFilter(logging.Filter):
    """Binds the request id and scrubs secret-shaped text from every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        record.__dict__.pop("color_message", None)  # uvicorn's terminal colours
        return True


def log_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the gateway and uvicorn (workers use it too)."""
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "main",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "gateway.observability.logs.ContextFilter"}},
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"level": level.upper(), "handlers": ["main"]},
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def configure_logging(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    config = log_config(level, fmt)
    logging.config.dictConfig(config)
    return config
