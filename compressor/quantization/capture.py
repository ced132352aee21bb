"""Capturing a model with ``torch.export`` for PT2E quantization, with a dynamic batch dimension
and errors that name what could not be captured."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from compressor.errors import InvalidTypeError
from compressor.quantization.rewrites import expand_attention, flatten_linear_inputs
from compressor.utils.diagnose import export_program
from compressor.utils.inputs import as_args
from compressor.utils.modes import record_modes, restore_modes

__all__ = ["as_inputs", "capture"]

_HINTS = ("Hints: quantize a submodule that torch.export can capture (pass it instead of the "
          "whole model, or choose it with the callback's `student=`), keep {module} out of the "
          "quantized part (in float), or rewrite the data-dependent code with tensor ops / "
          "torch.cond.")


def as_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple of tensors, each with a batch of at least 2 rows
    (``torch.export`` specialises size-1 dimensions, which would fix the batch size).

    Raises:
        InvalidTypeError: not a tensor or a tuple/list of tensors with a batch dimension.
    """
    values = as_args(example_inputs)
    if not values or not all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values):
        raise InvalidTypeError(
            "`example_inputs` must be a tensor or a tuple of tensors with a batch dimension (the "
            f"model's positional inputs), got {type(example_inputs).__name__}.")
    return tuple(torch.cat([v, v]) if v.shape[0] == 1 else v for v in values)


def capture(model: nn.Module, example_inputs: Any, training: bool,
            expand_attention_ops: bool = True, flatten_linears: bool = True) -> GraphModule:
    """``torch.export`` ``model`` with a dynamic first dimension on every input.

    The model is captured in train mode (QAT: batch norm with batch statistics, dropout) or eval
    mode (PTQ); every module's mode is restored afterwards. With ``expand_attention_ops``, fused
    attention (``scaled_dot_product_attention``) is written as the matrix products it computes,
    so that they can be quantized; with ``flatten_linears``, linear layers on inputs of more
    than two dimensions multiply a 2-D view (see :mod:`compressor.quantization.rewrites`).

    Raises:
        CaptureError: ``torch.export`` failed; the message names the failing op / module and
            suggests quantizing a capturable submodule or keeping that part in float.
    """
    inputs = as_inputs(example_inputs)
    batch = torch.export.Dim("batch", min=1)
    modes = record_modes(model)
    model.train(training)
    try:
        program = export_program(model, inputs, "quantization", _HINTS,
                                 dynamic_shapes=tuple({0: batch} for _ in inputs))
    finally:
        restore_modes(model, modes)
    graph = program.module()
    if expand_attention_ops:
        expand_attention(graph)
    if flatten_linears:
        flatten_linear_inputs(graph)
    return graph
