"""The schedule clock shared by ``Pruning`` and ``QuantizationAwareTraining``: a schedule is
given in epochs or in optimizer steps (never both, which their configs check), and its events
are compared across units once the epoch length is known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl

__all__ = ["Clock", "steps_per_epoch"]

Unit = Literal["epoch", "step"]


@dataclass(frozen=True)
class Clock:
    """Counts epochs or optimizer steps.

    Epoch events happen at the start of an epoch (or, for ``at_end`` events such as
    compaction, at its end); step events at the start of the step, before its forward.
    """

    unit: Unit

    def now(self, trainer: pl.Trainer) -> int:
        """The current epoch or optimizer step."""
        return trainer.current_epoch if self.unit == "epoch" else trainer.global_step

    def first_step(self, at: int, per_epoch: int, at_end: bool = False) -> int:
        """The first optimizer step that runs after the event ``at`` (``at_end``: an event at
        the end of epoch ``at``, or right at the start of step ``at``, before a same-step event
        of another callback can be relied on)."""
        if self.unit == "epoch":
            return (at + 1) * per_epoch if at_end else at * per_epoch
        return at + 1 if at_end else at


def steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimizer steps per training epoch (at least 1)."""
    return max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
