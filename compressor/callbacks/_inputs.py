"""Example inputs for tracing the student: given ones, the first training batch, or the
LightningModule's ``example_input_array``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from compressor.callbacks._lightning import fit_loader
from compressor.errors import ConfigError
from compressor.utils.inputs import batch_inputs

__all__ = ["train_loader", "example_inputs"]

_ROWS = 2  # a small batch is enough to trace; QAT capture needs at least two rows


def train_loader(trainer: pl.Trainer) -> Any:
    """The training data loader (from the datamodule or the loaders passed to ``fit``)."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        return datamodule.train_dataloader()
    return fit_loader(trainer)


def example_inputs(trainer: pl.Trainer, pl_module: pl.LightningModule, given: Any, who: str) -> Any:
    """``given``, else the first rows of the first training batch's inputs, else
    ``pl_module.example_input_array``.

    Raises:
        ConfigError: none is available; the message says how to provide one.
    """
    if given is not None:
        return given
    hint = f"Pass {who}(example_inputs=...) or set `example_input_array` on the LightningModule."
    loader = train_loader(trainer)
    if loader is not None:
        inputs = batch_inputs(next(iter(loader)), who, hint)
        return inputs[:_ROWS].detach().clone()
    array = getattr(pl_module, "example_input_array", None)
    if isinstance(array, (torch.Tensor, tuple, list)):
        return array
    raise ConfigError(f"{who} needs example inputs to trace the model. {hint}")
