"""Helpers shared by the label-propagation rules: operator names, static shapes, argument
parsing, and the records the rules leave for compaction (head splits, normalisations)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import fx, nn

__all__ = ["SizeAttribute", "NormUse", "Labels", "op_name", "shape_of", "node_args", "flatten",
           "width", "extent", "norm_dim", "as_list", "dims_arg", "get_tensor", "HEAD_WORDS",
           "size_attributes"]

Labels = np.ndarray
# Integer module attributes whose name contains one of these words count the attention heads.
HEAD_WORDS = ("head",)
# ... or hold a width (number of channels, features, heads, or the size of a split).
_WIDTH_WORDS = ("dim", "feature", "channel", "hidden", "embed", "width", "size", "head", "plane",
                "inner", "nf", "nx", "n_embd", "d_model", "split")
# ... but not when they name something that is not a width.
_NOT_WIDTH_WORDS = ("image", "img", "patch", "kernel", "stride", "pad", "window", "resolution",
                    "class", "label", "vocab", "position", "len", "seq", "token", "batch", "group",
                    "layer", "depth", "step", "max", "min")


@dataclass
class SizeAttribute:
    """An integer attribute of ``module`` that counts the positions along ``dim`` of ``labels``
    (a head count, a width used in a reshape, the size of the parts of a split): after
    removal it must equal the number of positions that keep a channel."""

    module: str
    attribute: str
    labels: np.ndarray
    dim: int


def size_attributes(module: nn.Module, value: int, words: tuple[str, ...] = _WIDTH_WORDS
                    ) -> list[str]:
    """Integer attributes of ``module`` equal to ``value`` whose name reads as a width (or
    contains one of ``words``)."""
    found = []
    for attribute, current in vars(module).items():
        name = attribute.lower()
        if (isinstance(current, int) and not isinstance(current, bool) and current == value
                and not attribute.startswith("_") and any(word in name for word in words)
                and not any(word in name for word in _NOT_WIDTH_WORDS)):
            found.append(attribute)
    return found


@dataclass
class NormUse:
    """A LayerNorm-style module normalising over labelled channels.

    Attributes:
        module: Qualified name of the module.
        labels: Labels of the module's input (its output has the same shape).
        eps: The normalisation's epsilon.
        dim: The channel dimension of the module's input and output (negative: counted from
            the end), e.g. -1 for ``nn.LayerNorm``, -3 for a channels-first ``LayerNorm2d``.
    """

    module: str
    labels: np.ndarray
    eps: float
    dim: int = -1


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
