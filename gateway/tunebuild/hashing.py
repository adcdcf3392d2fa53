"""The content hash that identifies a base model (weights and tokenizer)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_files"]


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
