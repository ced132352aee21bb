"""Exceptions raised by compressor.

Every error names the offending argument, shows the bad value and, where possible, lists the
valid values and a hint. They subclass the matching built-in exception (``ValueError``,
``TypeError``, ...) so callers can catch either.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "CompressorError",
    "ConfigError",
    "InvalidTypeError",
    "UnknownNameError",
    "DataNotFoundError",
    "CompositionError",
    "CaptureError",
    "ExportError",
    "ParityError",
    "NonFiniteError",
    "closest_names",
]


_MAX_LISTED = 25


class CompressorError(Exception):
    """Base class of every error raised by compressor."""


class ConfigError(CompressorError, ValueError):
    """An argument or configuration value is invalid."""


class InvalidTypeError(CompressorError, TypeError):
    """An argument has the wrong type."""


class UnknownNameError(ConfigError, KeyError):
    """A name (model, dataset, criterion, layer, ...) is not one of the known ones."""

    def __init__(self, what: str, value: object, valid: Iterable[str], hint: str = "") -> None:
        valid = sorted(valid)
        close = closest_names(str(value), valid)
        msg = f"Unknown {what} {value!r}."
        if close:
            msg += f" Did you mean {', '.join(repr(c) for c in close)}?"
        shown = ", ".join(valid[:_MAX_LISTED]) if valid else "(none)"
        if len(valid) > _MAX_LISTED:
            shown += f", ... ({len(valid) - _MAX_LISTED} more)"
        msg += f" Valid values: {shown}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)
        self.what, self.value, self.valid = what, value, valid

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class DataNotFoundError(CompressorError, FileNotFoundError):
    """A dataset's files were not found in any of the searched places."""


class CompositionError(ConfigError):
    """Callbacks or recipe sections are configured in a way that cannot work together."""


class CaptureError(CompressorError, RuntimeError):
    """``torch.export`` could not capture a model (needed for quantization)."""


class ExportError(CompressorError, RuntimeError):
    """A model could not be exported to ONNX or the exported file failed verification."""


class ParityError(ExportError):
    """The exported ONNX model's outputs do not match the PyTorch model's."""


class NonFiniteError(CompressorError, FloatingPointError):
    """A number that training depends on (the loss, a teacher output, a quantization range, a
    weight) became NaN or infinite.

    The message names what became non-finite, the global step and the compression phases active
    at that step (when known), where the first non-finite value appears (``where``, e.g. the
    first module whose output is non-finite when the batch is run again) and a hint.

    Attributes:
        what: What became non-finite, e.g. ``"the training loss"``.
        step: The global (optimizer) step, if known.
        phases: The compression phases active at that step (``"pruning"``, ``"QAT"``,
            ``"distillation"``); empty if none or unknown.
        where: A sentence locating the first non-finite value.
        hint: What to try.
        module: The module path the value was traced to (``None`` if not found).
    """

    def __init__(self, what: str, *, where: str = "", hint: str = "", step: int | None = None,
                 phases: Sequence[str] | None = None, module: str | None = None) -> None:
        self.what, self.where, self.hint, self.module = what, where, hint, module
        self.step = step
        self.phases: tuple[str, ...] | None = tuple(phases) if phases is not None else None
        super().__init__(self._message())

    def locate(self, step: int, phases: Sequence[str]) -> NonFiniteError:
        """Add the global step and the active phases (known to the training loop, not to the
        library code that detected the problem); returns ``self``, to be re-raised."""
        self.step, self.phases = step, tuple(phases)
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        when = []
        if self.step is not None:
            when.append(f"at global step {self.step}")
        if self.phases is not None:
            when.append(f"during {' + '.join(self.phases)}" if self.phases
                        else "before any compression phase started")
        text = f"{self.what[:1].upper()}{self.what[1:]} became non-finite (NaN or Inf)"
        text += (" " + ", ".join(when) if when else "") + "."
        if self.where:
            text += f" {self.where}"
        if self.hint:
            text += f" Hint: {self.hint}"
        return text


def closest_names(value: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``value`` (for "did you mean" hints)."""
    return difflib.get_close_matches(value, list(candidates), n=n, cutoff=0.5)
