"""One module-name matcher, used by every option that takes name patterns (``ignore``,
``overrides``, ``keep_float``).

Semantics: a pattern is a case-sensitive glob (:func:`fnmatch.fnmatchcase`: ``*`` matches any
run of characters, dots included; ``?`` one character; ``[ab]`` a set), never a regular
expression. A pattern that matches a module also matches every module inside it: ``"layer1"``
matches ``"layer1.0.conv1"``, as does ``"layer?"`` or ``"layer1.*"``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from compressor.errors import ConfigError, closest_names

__all__ = ["matches", "matching", "check_patterns"]


def matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` matches module ``name`` or one of the modules containing it."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:end]), pattern)
               for end in range(len(parts), 0, -1))


def matching(patterns: Iterable[str], names: Iterable[str]) -> set[str]:
    """The names matched by any of ``patterns``."""
    patterns = list(patterns)
    return {name for name in names if any(matches(p, name) for p in patterns)}


def check_patterns(argument: str, patterns: Iterable[str], names: Sequence[str]) -> None:
    """Raise ``ConfigError`` for a pattern of option ``argument`` that matches none of ``names``
    (with the closest names and the list of names)."""
    for pattern in patterns:
        if not matching([pattern], names):
            close = closest_names(pattern, names)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"`{argument}` entry {pattern!r} matches no layer.{hint} "
                              f"Layers: {shown}")
