"""Stores what is needed to rebuild the model (recipe, input shape) inside every checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

__all__ = ["RunInfo", "RUN_INFO_KEY"]

#: Checkpoint key under which runs store their recipe and input shape.
RUN_INFO_KEY = "compressor_run"


class RunInfo(pl.Callback):
    """Adds ``info`` (JSON-serialisable) to each checkpoint under ``checkpoint["compressor_run"]``,
    so ``compressor export CKPT`` can rebuild the model without the original script."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_INFO_KEY] = self.info
