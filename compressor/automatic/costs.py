"""What a choice of kept channels costs: exact MACs and parameters, and the layer shapes the
latency table is measured on.

A choice is ``{unit: kept channels}`` for the channel groups of a ``Pruner`` (unit names such as
``"channel:3"``) and, optionally, ``{"block:<path>": 1 or 0}`` for residual blocks kept or
replaced by the identity. Each parameter dimension that a group's channels occupy shrinks in
proportion to the channels kept and a removed block takes its parameters and layers with it,
so the parameter count and the MACs of convolutions and linear layers after compaction follow
exactly from the choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.graph.dependency import ChannelGroup
from compressor.utils.inputs import as_args
from compressor.utils.modes import temporary_mode

__all__ = ["Layer", "CostModel", "build_cost_model", "block_unit", "Choice"]

#: ``{unit: kept channels}``.
Choice = Mapping[str, int]
_SlotKey = tuple[str, int]


@dataclass(frozen=True)
class Layer:
    """A convolution or linear layer as the model runs it on the example inputs.

    Attributes:
        name: Module path.
        weight: Its weight parameter's name.
        kind: ``"conv"`` or ``"linear"``.
        weight_shape: ``(out, in / groups, *kernel)``.
        input_shape: One sample's input shape (without the batch dimension).
        positions: Output positions per sample and channel (pixels or tokens).
        stride, padding, dilation, groups: Convolution attributes (``()``/1 for linear).
    """

    name: str
    weight: str
    kind: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    positions: int
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1

    @property
    def depthwise(self) -> bool:
        """Whether every output channel reads one input channel (``groups == channels``)."""
        return self.kind == "conv" and self.groups > 1 and self.weight_shape[1] == 1


class CostModel:
    """MACs, parameters and per-layer widths of the model for any choice of kept channels.

    Args:
        groups: The pruned channel groups by unit name.
        layers: The model's convolution and linear layers.
        parameter_shapes: Every parameter's shape by name.
    """

    def __init__(self, groups: Mapping[str, ChannelGroup], layers: list[Layer],
                 parameter_shapes: Mapping[str, tuple[int, ...]],
                 blocks: Sequence[str] = ()) -> None:
        self.layers = layers
        self.sizes = {unit: len(group) for unit, group in groups.items()}
        self.blocks = {block_unit(path): path for path in blocks}
        self.sizes.update({unit: 1 for unit in self.blocks})
        self.parameter_shapes = dict(parameter_shapes)
        self.owners: dict[_SlotKey, dict[str, int]] = {}
        for unit, group in groups.items():
            for channel in group.channels:
                for slot, positions in channel.slices.items():
                    owned = self.owners.setdefault((slot.tensor, slot.dim), {})
                    owned[unit] = owned.get(unit, 0) + len(positions)

    def dense(self) -> dict[str, int]:
        """The choice that keeps every channel."""
        return dict(self.sizes)

    def kept_size(self, tensor: str, dim: int, size: int, choice: Choice) -> float:
        """Entries of ``tensor``'s dimension ``dim`` (of ``size``) left by ``choice``."""
        removed = sum(positions * (1 - choice.get(unit, self.sizes[unit]) / self.sizes[unit])
                      for unit, positions in self.owners.get((tensor, dim), {}).items())
        return size - removed

    def kept_fraction(self, tensor: str, dim: int, choice: Choice) -> float:
        """Fraction of ``tensor``'s dimension ``dim`` left by ``choice``."""
        size = self.parameter_shapes[tensor][dim]
        return self.kept_size(tensor, dim, size, choice) / size

    def removed(self, name: str, choice: Choice) -> bool:
        """Whether module or parameter ``name`` lies in a block ``choice`` removes."""
        return any(choice.get(unit, 1) == 0 and (name == path or name.startswith(path + "."))
                   for unit, path in self.blocks.items())

    def _kept_numel(self, tensor: str, choice: Choice) -> float:
        if self.removed(tensor, choice):
            return 0.0
        shape = self.parameter_shapes[tensor]
        return math.prod(self.kept_size(tensor, d, n, choice) for d, n in enumerate(shape))

    def params(self, choice: Choice) -> float:
        """Parameters of the model compacted to ``choice``."""
        return sum(self._kept_numel(name, choice) for name in self.parameter_shapes)

    def macs(self, choice: Choice) -> float:
        """Multiply-accumulates per sample of convolutions and linear layers after ``choice``."""
        return sum(layer.positions * self._kept_numel(layer.weight, choice)
                   for layer in self.layers)

    def widths(self, layer: Layer, choice: Choice) -> tuple[float, float]:
        """``(input, output)`` kept fractions of ``layer`` (equal for depthwise layers)."""
        out = self.kept_fraction(layer.weight, 0, choice)
        if layer.depthwise:
            return out, out
        return self.kept_fraction(layer.weight, 1, choice), out

    def activations(self, choice: Choice) -> float:
        """Output values per sample of every layer after ``choice`` (the part of element-wise
        work, such as additions and activations, that shrinks with the channels)."""
        return sum(layer.positions * self.kept_size(layer.weight, 0, layer.weight_shape[0],
                                                    choice)
                   for layer in self.layers if not self.removed(layer.name, choice))


def block_unit(path: str) -> str:
    """The unit name of the residual block at ``path``."""
    return f"block:{path}"


def build_cost_model(model: nn.Module, groups: Mapping[str, ChannelGroup],
                     example_inputs: Any, blocks: Sequence[str] = ()) -> CostModel:
    """Record the convolution and linear layers of ``model`` on ``example_inputs`` (one
    forward pass in eval mode) and build the :class:`CostModel` of ``groups`` and of the
    removable residual ``blocks`` (module paths)."""
    layers: list[Layer] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            handles.append(module.register_forward_hook(_recorder(name, module, layers)))
    try:
        with temporary_mode(model, False), torch.no_grad():
            model(*as_args(example_inputs))
    finally:
        for handle in handles:
            handle.remove()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return CostModel(groups, layers, shapes, blocks)  # a module called twice works twice


def _recorder(name: str, module: nn.Module, layers: list[Layer]) -> Any:
    def record(_: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not (args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor)):
            return
        weight = module.weight
        batch = args[0].shape[0] if args[0].ndim > 1 else 1
        positions = output.numel() // max(1, batch * weight.shape[0])
        common = {"name": name, "weight": f"{name}.weight" if name else "weight",
                  "weight_shape": tuple(weight.shape), "positions": positions,
                  "input_shape": tuple(args[0].shape[1:])}
        if isinstance(module, nn.Linear):
            layers.append(Layer(kind="linear", **common))
        else:
            layers.append(Layer(kind="conv", stride=tuple(module.stride),
                                padding=tuple(module.padding)
                                if not isinstance(module.padding, str) else (0,),
                                dilation=tuple(module.dilation), groups=module.groups, **common))
    return record
