"""Counting multiply-accumulate operations (MACs) of a forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compressor.utils.inputs import as_args
from compressor.utils.modes import temporary_mode
from compressor.utils.modules import count_parameters

__all__ = ["count_macs", "macs_by_op", "model_size"]


def macs_by_op(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """MACs of one forward pass per ATen op (convolutions, matrix products), in eval mode.

    The count is per batch of ``example_inputs``; pass a batch of one for per-sample MACs.
    """
    with temporary_mode(model, False), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*as_args(example_inputs))
    flops = counter.get_flop_counts().get("Global", {})
    return {str(op).removeprefix("aten."): int(count) // 2 for op, count in flops.items()}


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Total MACs of one forward pass of ``model`` on ``example_inputs`` (eval mode).

    Counts convolutions and matrix products (the operations that dominate inference cost);
    element-wise operations, normalisation and pooling are not counted.
    """
    return sum(macs_by_op(model, example_inputs).values())


def model_size(model: nn.Module, example_inputs: Sequence[Any] | Any) -> dict[str, int]:
    """Parameter count and MACs of ``model`` (for reports)."""
    return {"parameters": count_parameters(model), "macs": count_macs(model, example_inputs)}
