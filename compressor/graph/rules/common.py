"""Helpers shared by the label-propagation rules: operator names, static shapes, argument
parsing, and the records the rules leave for compaction (head splits, normalisations)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import fx, nn

__all__ = ["HeadSplit", "NormUse", "Labels", "op_name", "shape_of", "node_args", "flatten",
           "width", "extent", "norm_dim", "as_list", "dims_arg", "get_tensor", "HEAD_WORDS"]

Labels = np.ndarray
# Integer module attributes whose name contains one of these words count the attention heads.
HEAD_WORDS = ("head",)


@dataclass
class HeadSplit:
    """A reshape that splits channels into attention heads inside ``module``; ``attribute``
    holds the head count and must follow the number of kept heads."""

    module: str
    attribute: str
    labels: np.ndarray
    dim: int


@dataclass
class NormUse:
    """A LayerNorm-style module normalising over labelled channels (last dimension)."""

    module: str
    labels: np.ndarray
    eps: float


def op_name(node: fx.Node) -> str:
    """The bare operator name of a call node (``aten.conv2d.default`` -> ``conv2d``)."""
    target = node.target
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", str(target))
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        name = getattr(packet, "__name__", name)
    return name.split(".")[-1]


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The static shape of a node's tensor value, or ``None`` for non-tensors."""
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        return None


def flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in flatten(item)]
    return []


def node_args(node: fx.Node) -> list[Any]:
    found: list[Any] = []

    def visit(arg: Any) -> None:
        if isinstance(arg, fx.Node):
            found.append(arg)
        elif isinstance(arg, (list, tuple)):
            for item in arg:
                visit(item)
        elif isinstance(arg, dict):
            for item in arg.values():
                visit(item)

    visit(node.args)
    visit(node.kwargs)
    return found


def width(node: Any, dim: int) -> int:
    shape = shape_of(node) or ()
    return shape[dim] if len(shape) > dim else -1


def extent(arg: Any, ndim: int) -> set[int]:
    shape = shape_of(arg) or ()
    offset = ndim - len(shape)
    return {offset + d for d, size in enumerate(shape) if size > 1}


def norm_dim(dim: Any, ndim: int) -> int:
    dim = int(dim)
    return dim + ndim if dim < 0 else dim


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def dims_arg(node: fx.Node, position: int, ndim: int) -> list[int]:
    value = node.args[position] if len(node.args) > position else node.kwargs.get("dim")
    if value is None:
        return list(range(ndim))
    return [norm_dim(d, ndim) for d in as_list(value)]


def get_tensor(model: nn.Module, name: str) -> Any:
    module_path, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    return getattr(module, attribute)
