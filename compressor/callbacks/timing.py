"""Wall-clock timing of training epochs, with validation time kept apart."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl

__all__ = ["EpochTimer"]


class EpochTimer(pl.Callback):
    """Records, per training epoch, the seconds spent training (``train_seconds``) and the
    seconds of the whole epoch including validation (``epoch_seconds``)."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self._epoch_start = 0.0
        self._validation_start = 0.0
        self._validation_seconds = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._validation_seconds = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_seconds += time.perf_counter() - self._validation_start

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = time.perf_counter() - self._epoch_start
        self.epoch_seconds.append(total)
        self.train_seconds.append(total - self._validation_seconds)

    def summary(self) -> dict[str, Any]:
        """Median seconds per epoch (training only and with validation) and the epoch count."""
        if not self.train_seconds:
            return {"epochs_timed": 0}
        return {
            "epochs_timed": len(self.train_seconds),
            "train_seconds_per_epoch": statistics.median(self.train_seconds),
            "epoch_seconds_with_validation": statistics.median(self.epoch_seconds),
        }
