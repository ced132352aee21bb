"""Small argument checks shared by constructors; each raises a clear :mod:`compressor.errors` error."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import TypeVar

from compressor.errors import ConfigError, InvalidTypeError, UnknownNameError

E = TypeVar("E", bound=enum.Enum)


def check_choice(name: str, value: object, choices: Iterable[str], hint: str = "") -> str:
    """Return ``value`` lower-cased if it is one of ``choices``, else raise ``UnknownNameError``."""
    choices = list(choices)
    if not isinstance(value, str) or value.lower() not in choices:
        raise UnknownNameError(f"`{name}`", value, choices, hint)
    return value.lower()


def check_enum(name: str, value: E | str, enum_type: type[E], hint: str = "") -> E:
    """Convert a string (or the enum itself) to a member of ``enum_type``."""
    if isinstance(value, enum_type):
        return value
    valid = [str(m.value) for m in enum_type]
    if isinstance(value, str) and value.lower() in valid:
        return enum_type(value.lower())
    raise UnknownNameError(f"`{name}`", value, valid, hint)


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None,
              hint: str = "") -> int:
    """Return ``value`` if it is an int in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__}).")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"`{name}` must be {_range_text(minimum, maximum)}, got {value}. {hint}".strip())
    return value


def check_float(name: str, value: object, low: float | None = None, high: float | None = None, *,
                low_inclusive: bool = True, high_inclusive: bool = True, hint: str = "") -> float:
    """Return ``value`` as float if it is a finite number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value >= low if low_inclusive else value > low)
    if high is not None:
        ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        interval = f"in {lo or '(-inf'}, {hi or 'inf)'}"
        raise ConfigError(f"`{name}` must be {interval}, got {value:g}. {hint}".strip())
    return value


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"between {minimum} and {maximum}"
    if minimum is not None:
        return f">= {minimum}"
    return f"<= {maximum}"


def check_kwargs(what: str, target: object, kwargs: dict[str, object],
                 reserved: tuple[str, ...] = ()) -> None:
    """Raise ``ConfigError`` if ``kwargs`` has keys that ``target`` (a function or a class,
    including the ``__init__`` arguments its bases receive through ``**kwargs``) does not accept."""
    accepted = accepted_parameters(target)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        from compressor.errors import closest_names

        hints = [f"{key!r} (did you mean {closest_names(key, accepted)[0]!r}?)"
                 if closest_names(key, accepted) else repr(key) for key in unknown]
        options = sorted(accepted - set(reserved))
        raise ConfigError(f"{what} does not accept {', '.join(hints)}. "
                          f"Its options are: {', '.join(options) or '(none)'}.")


def accepted_parameters(target: object) -> set[str]:
    """Names of the keyword arguments ``target`` accepts (following ``**kwargs`` to base classes)."""
    import inspect

    functions = ([cls.__init__ for cls in target.__mro__ if "__init__" in vars(cls)]
                 if isinstance(target, type) else [target])
    names: set[str] = set()
    for function in functions:
        parameters = inspect.signature(function).parameters.values()
        names |= {p.name for p in parameters
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names
