"""Sparsity schedules: the target sparsity at each time step (epoch or optimizer step).

Masks are updated at *events*: ``start``, ``start + frequency``, ... and always at ``end``, where
the schedule reaches its target exactly. Between events the sparsity stays at the last event's
value. ``cubic`` is the gradual schedule of Zhu & Gupta (2017):
``s_t = s_f * (1 - (1 - p)^3)`` with ``p = (t - start) / (end - start)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from compressor.errors import ConfigError
from compressor.utils.checks import check_enum, check_float, check_int

__all__ = ["ScheduleKind", "Schedule", "make_schedule"]


class ScheduleKind(str, enum.Enum):
    """How sparsity grows from 0 at ``start`` to the target at ``end``."""

    ONE_SHOT = "one-shot"
    LINEAR = "linear"
    CUBIC = "cubic"
    EXPONENTIAL = "exponential"
    ITERATIVE = "iterative"


@dataclass(frozen=True)
class Schedule:
    """A sparsity schedule; call it with a time step to get the target sparsity.

    Attributes:
        kind: The shape of the ramp.
        target: Final sparsity in ``[0, 1)``.
        start: First event (sparsity is 0 before it).
        end: Last event, where ``target`` is reached (``end == start`` for one-shot).
        frequency: Time steps between events (gradual kinds).
        increments: Number of equal increments (``iterative`` only).
    """

    kind: ScheduleKind
    target: float
    start: int
    end: int
    frequency: int = 1
    increments: int = 1

    def __post_init__(self) -> None:
        check_float("sparsity", self.target, 0.0, 1.0, high_inclusive=False,
                    hint="Use e.g. 0.5 for half of the weights or channels.")
        check_int("start", self.start, minimum=0)
        check_int("end", self.end, minimum=0)
        check_int("frequency", self.frequency, minimum=1)
        check_int("increments", self.increments, minimum=1)
        if self.end < self.start:
            raise ConfigError(f"`end` ({self.end}) must not be before `start` ({self.start}).")
        if self.kind is ScheduleKind.ONE_SHOT and self.end != self.start:
            raise ConfigError(f"A one-shot schedule prunes once: `end` must equal `start` "
                              f"(got start={self.start}, end={self.end}) or be omitted.")
        if self.kind is not ScheduleKind.ONE_SHOT and self.end == self.start:
            raise ConfigError(f"A {self.kind.value} schedule needs `end` > `start` (got both "
                              f"{self.start}); use schedule='one-shot' to prune at once.")

    def progress(self, step: int) -> float:
        """Fraction of the ramp done at the last event at or before ``step`` (0 before start)."""
        if step < self.start:
            return 0.0
        if step >= self.end or self.end == self.start:
            return 1.0
        if self.kind is ScheduleKind.ITERATIVE:
            span = self.end - self.start
            done = math.floor((step - self.start) * self.increments / span + 1e-9)
            return done / self.increments
        event = self.start + (step - self.start) // self.frequency * self.frequency
        return (event - self.start) / (self.end - self.start)

    def __call__(self, step: int) -> float:
        """Target sparsity at ``step``."""
        if step < self.start:
            return 0.0
        p = self.progress(step)
        if self.kind in (ScheduleKind.ONE_SHOT, ScheduleKind.LINEAR, ScheduleKind.ITERATIVE):
            value = self.target * p
        elif self.kind is ScheduleKind.CUBIC:
            value = self.target * (1.0 - (1.0 - p) ** 3)
        else:
            value = 1.0 - (1.0 - self.target) ** p
        return self.target if p >= 1.0 else min(value, self.target)

    def is_event(self, step: int) -> bool:
        """Whether masks are updated at ``step``."""
        if step < self.start or step > self.end:
            return False
        if step in (self.start, self.end):
            return True
        if self.kind is ScheduleKind.ITERATIVE:
            return self.progress(step) > self.progress(step - 1)
        return (step - self.start) % self.frequency == 0

    def events(self) -> list[int]:
        """Every event step, in order."""
        return [step for step in range(self.start, self.end + 1) if self.is_event(step)]


def make_schedule(kind: ScheduleKind | str, target: float, start: int, end: int | None = None,
                  frequency: int = 1, increments: int | None = None) -> Schedule:
    """Build a validated :class:`Schedule` (``end`` defaults to ``start``; ``increments``
    defaults to the number of ``frequency`` periods between start and end)."""
    kind = check_enum("schedule", kind, ScheduleKind)
    end = start if end is None else end
    if increments is None:
        increments = max(1, (end - start) // max(1, frequency)) if isinstance(end, int) and \
            isinstance(start, int) else 1
    return Schedule(kind, target, start, end, frequency, increments)
