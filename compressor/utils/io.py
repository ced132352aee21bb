"""Atomic file writes: the target path either keeps its old content or gets the complete new
content, never a half-written file (write to a temporary file in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "load_checkpoint"]


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, _file_mode(path))
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_write(path) as temporary:
        torch.save(obj, temporary)
    return Path(path)


def _file_mode(path: Path) -> int:
    """The permissions a file written at ``path`` should get: those of the file it replaces, or
    what the process's umask gives a new file (``mkstemp`` alone would give 0600)."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def load_checkpoint(path: str | Path, what: str = "Checkpoint") -> Any:
    """Read a file written by ``torch.save`` without running code from it (``weights_only``).

    Args:
        path: The file.
        what: How error messages name the file (``"Teacher checkpoint"``, ...).

    Raises:
        ConfigError: the file does not exist, or it holds Python objects other than tensors,
            numbers, strings and plain containers.
    """
    import pickle

    import torch

    from compressor.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"{what} {path} holds Python objects other than tensors and plain containers, and "
            "compressor never runs code from a file it opens (torch.load(weights_only=True)): "
            f"{first_line} Save only weights and plain data, e.g. "
            "torch.save(model.state_dict(), path), or a checkpoint written by compressor."
        ) from None
