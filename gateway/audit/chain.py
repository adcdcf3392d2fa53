"""The hash chain: each record carries `seq` and `prev`, the SHA-256 of the previous line."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["GENESIS", "chain_line", "record_hash"]

GENESIS = "0" * 64


def record_hash(line: bytes) -> str:
    """SHA-256 of one serialized record (without its trailing newline)."""
    return hashlib.sha256(line).hexdigest()


def chain_line(record: dict[str, Any], seq: int, prev: str) -> bytes:
    """Serialize a record into its chained line. JSON escaping keeps CR/LF out of the line."""
    body = {**record, "seq": seq, "prev": prev}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
