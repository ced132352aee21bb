"""ONNX translations compressor adds to ``torch.onnx.export`` for quantized graphs.

The exporter writes global average pooling (``adaptive_avg_pool2d`` to 1x1) as ``ReduceMean``,
which ONNX Runtime cannot fuse with the surrounding quantize/dequantize nodes; as
``GlobalAveragePool`` it becomes ``QLinearGlobalAveragePool``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from compressor.quantization.modes import is_exported_model

__all__ = ["quantized_translations"]


def _global_average_pool(x: Any, output_size: Any) -> Any:
    from onnxscript import opset18 as op

    return op.GlobalAveragePool(x)


def quantized_translations(model: nn.Module) -> dict[Callable, Callable]:
    """Translations for an exported graph module whose every ``adaptive_avg_pool2d`` pools to
    1x1 (other models: none, so the exporter's defaults apply)."""
    if not is_exported_model(model):
        return {}
    op = torch.ops.aten.adaptive_avg_pool2d.default
    graph = cast(torch.fx.GraphModule, model).graph
    sizes = [node.args[1] for node in graph.nodes if node.target is op]
    if not sizes or any(tuple(size) != (1, 1) for size in sizes):  # type: ignore[arg-type]
        return {}
    return {op: _global_average_pool}
