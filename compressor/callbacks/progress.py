"""Progress output: a live progress bar on terminals, one line per epoch elsewhere (logs, CI)."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

__all__ = ["EpochSummary", "progress_callbacks"]


class EpochSummary(pl.Callback):
    """Prints ``epoch 3/10 | train/loss 0.312 | val/acc 0.912 | 37.2 s`` after each epoch."""

    def __init__(self, keys: tuple[str, ...] = ("train/loss", "val/loss", "val/acc")) -> None:
        self.keys = keys
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key in self.keys:
            for name in (key, f"{key}_epoch"):
                if name in metrics:
                    parts.append(f"{key} {float(metrics[name]):.4f}")
                    break
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        print(" | ".join(parts), flush=True)


def progress_callbacks(enabled: bool = True) -> tuple[list[pl.Callback], bool]:
    """Callbacks and the Trainer's ``enable_progress_bar`` flag for the current output stream:
    a rich progress bar on an interactive terminal, per-epoch summary lines otherwise."""
    if not enabled:
        return [], False
    if sys.stdout.isatty():
        return [RichProgressBar()], True
    return [EpochSummary()], False
