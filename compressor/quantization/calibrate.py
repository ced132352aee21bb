"""``calibrate``: run calibration data through a PTQ-prepared model so its observers record
activation ranges."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.fx import GraphModule

from compressor.errors import ConfigError
from compressor.quantization.info import quantization_info
from compressor.quantization.modes import set_training
from compressor.utils.checks import check_int
from compressor.utils.inputs import batch_inputs

__all__ = ["calibrate"]


def calibrate(prepared: GraphModule, data: Iterable[Any], batches: int | None = None) -> int:
    """Feed up to ``batches`` batches of ``data`` through ``prepared`` (eval mode, no gradients).

    Args:
        prepared: A model from :func:`~compressor.quantization.prepare_ptq` (a QAT model can be
            calibrated too, e.g. to initialise ranges before training).
        data: Batches: input tensors, ``(inputs, targets)`` tuples or mappings with an ``"x"``-like
            key (a ``DataLoader`` usually).
        batches: Stop after this many batches (default: all of ``data``).

    Returns:
        The number of batches used.

    Raises:
        ConfigError: ``prepared`` is not a prepared model, or ``data`` yielded no batch.
    """
    info = quantization_info(prepared)
    if batches is not None:
        check_int("batches", batches, minimum=1)
    device = next((t.device for t in [*prepared.parameters(), *prepared.buffers()]),
                  torch.device("cpu"))
    set_training(prepared, False)
    used = 0
    with torch.no_grad():
        for batch in data:
            if batches is not None and used >= batches:
                break
            prepared(batch_inputs(batch, who="calibrate").to(device))
            used += 1
    if used == 0:
        raise ConfigError("`data` yielded no batch: calibration needs at least one.")
    info.calibration_batches += used
    return used
