"""Finding the model inputs inside a data batch (tensor, ``(inputs, targets)`` or a mapping)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from compressor.errors import ConfigError, InvalidTypeError

__all__ = ["INPUT_KEYS", "batch_inputs", "as_args", "tensor_inputs"]

# Keys tried, in order, when a batch is a mapping.
INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "input_ids")


def batch_inputs(batch: Any, who: str = "compressor",
                 hint: str = "Pass the inputs explicitly.") -> torch.Tensor:
    """The model input inside a batch: the batch itself if it is a tensor, its first element if
    it is a tuple/list (``(inputs, targets)``), or the value under one of :data:`INPUT_KEYS` if
    it is a mapping.

    Args:
        batch: A batch as a data loader yields it.
        who: Names the caller in the error message.
        hint: Ends the error message.

    Raises:
        ConfigError: none of these applies.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in INPUT_KEYS:
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    shape = (f"mapping with keys {sorted(map(str, batch))}" if isinstance(batch, Mapping)
             else type(batch).__name__)
    raise ConfigError(
        f"{who} cannot find the model inputs in the batch ({shape}): it expects a tensor, a "
        f"tuple/list whose first element is the input tensor, or a mapping with one of the keys "
        f"{', '.join(INPUT_KEYS)}. {hint}")


def as_args(inputs: Any) -> tuple[Any, ...]:
    """Example inputs as a tuple of positional arguments (a tuple or list is spread, anything
    else is the single argument)."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def tensor_inputs(name: str, inputs: Any) -> tuple[torch.Tensor, ...]:
    """``inputs`` (a tensor or a tuple/list of tensors) as a non-empty tuple of tensors.

    Raises:
        InvalidTypeError: anything else; the message names argument ``name``.
    """
    values = as_args(inputs)
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        raise InvalidTypeError(f"`{name}` must be a tensor or a tuple of tensors (the positional "
                               f"inputs of forward), got {type(inputs).__name__}.")
    return values
