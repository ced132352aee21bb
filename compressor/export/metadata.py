"""Compression metadata stored in an exported file's ``metadata_props``, and the quantization
scheme read back from an ONNX graph."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.graph.macs import count_macs
from compressor.pruning.report import sparsity_report
from compressor.quantization.modes import is_exported_model

__all__ = ["RESERVED_KEYS", "quantization_scheme", "model_statistics", "onnx_weight_statistics",
           "metadata_props", "read_metadata"]

RESERVED_KEYS = ("producer", "producer_version", "torch_version", "opset", "quantization",
                 "sparsity", "macs", "parameters")

_COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_INT8 = {2: "u8", 3: "s8"}  # onnx.TensorProto.UINT8 / INT8


def _initializers(proto: Any) -> dict[str, Any]:
    return {init.name: init for init in proto.graph.initializer}


def _size(tensor: Any) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


def quantization_scheme(proto: Any) -> str:
    """A short description of how an ONNX graph is quantized.

    ``"fp32"`` without any quantization; otherwise e.g.
    ``"int8 QDQ (s8 per-channel weights, u8 activations)"`` (read from the ``DequantizeLinear``
    nodes of initializers and the zero-point types of the ``QuantizeLinear`` nodes).
    """
    inits = _initializers(proto)
    consumers: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    weights: set[str] = set()
    activations: set[str] = set()
    dynamic = operators = False
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                and consumers.get(node.output[0], set()) & _COMPUTE:
            kind = _INT8.get(inits[node.input[0]].data_type)
            if kind is not None:
                scale = inits.get(node.input[1])
                per_channel = scale is not None and _size(scale) > 1
                weights.add(f"{kind} {'per-channel' if per_channel else 'per-tensor'}")
        elif node.op_type == "QuantizeLinear":
            zero_point = inits.get(node.input[2]) if len(node.input) > 2 else None
            kind = _INT8.get(zero_point.data_type, "?") if zero_point is not None else "u8"
            activations.add(kind)
        elif node.op_type in {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger"}:
            dynamic = True
        elif node.op_type.startswith("QLinear") or node.op_type == "QGemm":
            operators = True
    if not (weights or activations or dynamic or operators):
        return "fp32"
    if operators and not weights:
        return "int8 QOperator"
    parts = [f"{'/'.join(sorted(weights)) or 'float'} weights"]
    parts.append("dynamic u8 activations" if dynamic and not activations
                 else f"{'/'.join(sorted(activations)) or 'float'} activations")
    return f"int8 QDQ ({', '.join(parts)})"


def onnx_weight_statistics(proto: Any) -> dict[str, float | int]:
    """Zeros and element counts of the weights of convolutions and matrix products in an ONNX
    graph (float or int8 initializers, directly or behind ``DequantizeLinear``)."""
    from onnx import numpy_helper

    inits = _initializers(proto)
    dequantized = {node.output[0]: node.input[0] for node in proto.graph.node
                   if node.op_type == "DequantizeLinear"}
    zeros = numel = 0
    seen: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in _COMPUTE or len(node.input) < 2:
            continue
        name = dequantized.get(node.input[1], node.input[1])
        if name in inits and name not in seen:
            seen.add(name)
            values = numpy_helper.to_array(inits[name])
            zeros += int((values == 0).sum())
            numel += int(values.size)
    return {"zeros": zeros, "numel": numel, "sparsity": zeros / numel if numel else 0.0}


def _macs(model: nn.Module, example: tuple) -> int:
    if not is_exported_model(model):
        return count_macs(model, example)

    class _Call(nn.Module):
        """Calls an exported model without registering it, so ``eval()`` does not reach it
        (exported models may refuse ``.eval()``; the caller has set their mode)."""

        def __init__(self, target: nn.Module) -> None:
            super().__init__()
            object.__setattr__(self, "target", target)

        def forward(self, *args: Any) -> Any:
            return self.__dict__["target"](*args)

    return count_macs(_Call(model), example)


def _graph_parameter_count(model: torch.fx.GraphModule) -> int:
    """Elements of the constant tensors an exported graph uses (weights, biases, embeddings,
    int8 or float), except the scales and zero points of quantize/dequantize ops."""
    counted: dict[str, int] = {}
    for node in model.graph.nodes:
        if node.op != "get_attr" or node.target in counted:
            continue
        value = _attribute(model, str(node.target))
        if not isinstance(value, torch.Tensor):
            continue
        as_qparam = all(
            user.op == "call_function" and "quantized_decomposed" in str(user.target)
            and node not in user.args[:1] for user in node.users)
        if not node.users or not as_qparam:
            counted[str(node.target)] = value.numel()
    return sum(counted.values())


def _attribute(model: nn.Module, target: str) -> Any:
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part, None)
    return value


def model_statistics(model: nn.Module, example_one: tuple) -> dict[str, Any]:
    """Sparsity of conv/linear weights, parameter count and MACs per sample of ``model``
    (``example_one`` is a batch of one; the model must already be in eval mode).

    For exported graph modules (e.g. converted int8 models) the parameter count is that of the
    constant tensors the graph uses (see :func:`_graph_parameter_count`). ``sparsity`` is
    ``None`` when the model holds no conv/linear modules (exported graphs); the caller then
    reads it from the ONNX file's weights.
    """
    report = sparsity_report(model)
    with torch.no_grad():
        macs = _macs(model, example_one)
    parameters = (_graph_parameter_count(cast(torch.fx.GraphModule, model))
                  if is_exported_model(model) else report.parameters)
    return {"sparsity": report.global_sparsity if report.layers else None,
            "parameters": parameters or None, "macs": macs}


def metadata_props(stats: Mapping[str, Any], user: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: ``stats`` plus the user's own entries.

    Raises:
        ConfigError: a user key collides with one compressor writes.
    """
    props = {key: _text(value) for key, value in stats.items() if value is not None}
    for key, value in (user or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"`metadata` keys must be non-empty strings, got {key!r}.")
        if key in RESERVED_KEYS:
            raise ConfigError(f"`metadata` key {key!r} is written by compressor itself; reserved "
                              f"keys: {', '.join(RESERVED_KEYS)}. Use another name.")
        props[key] = _text(value)
    return props


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, default=str)


def read_metadata(proto: Any) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model as a dict."""
    return {prop.key: prop.value for prop in proto.metadata_props}
