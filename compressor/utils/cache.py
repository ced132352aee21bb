"""A small on-disk cache of JSON results (sensitivity curves, latency tables).

Entries live under ``$COMPRESSOR_CACHE_DIR`` (default ``~/.cache/compressor``), one JSON file
per key, written atomically. A corrupt entry is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from compressor.utils.io import atomic_write_json

__all__ = ["cache_dir", "cache_key", "read_cached", "write_cached"]


def cache_dir() -> Path:
    """The cache folder (``$COMPRESSOR_CACHE_DIR`` or ``~/.cache/compressor``)."""
    return Path(os.environ.get("COMPRESSOR_CACHE_DIR") or Path.home() / ".cache" / "compressor")


def cache_key(*parts: Any) -> str:
    """A stable hex key of JSON-able ``parts`` (bytes are hashed as they are)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else
                      json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def read_cached(kind: str, key: str) -> Any | None:
    """The cached JSON value of ``kind``/``key``, or ``None``."""
    path = cache_dir() / kind / f"{key}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_cached(kind: str, key: str, value: Any) -> Path | None:
    """Store ``value``; a cache that cannot be written (read-only home) is skipped."""
    try:
        return atomic_write_json(cache_dir() / kind / f"{key}.json", value)
    except OSError:
        return None
