"""A progress bar for long library work (sensitivity analysis, latency tables)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None,
             enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on the terminal (``enabled=False``: silently).

    The bar is transient: it disappears when the work is done.
    """
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
