"""``sparsity_report``: sparsity counted from the actual zeros of a model's weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compressor.utils.modules import count_parameters
from compressor.utils.tables import text_table

__all__ = ["LayerSparsity", "SparsityReport", "sparsity_report", "prunable_weights",
           "PruningStatus", "measure_status"]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights of convolutions and linear layers, by parameter name (shared ones once)."""
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, _WEIGHTED) and isinstance(weight, torch.Tensor) and id(weight) not in seen:
            seen.add(id(weight))
            found[f"{name}.weight" if name else "weight"] = weight
    return found


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros and size of one weight tensor."""

    name: str
    shape: tuple[int, ...]
    zeros: int
    numel: int

    @property
    def sparsity(self) -> float:
        """Fraction of exactly-zero entries."""
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and global sparsity of a model's conv/linear weights, and its parameter count."""

    layers: list[LayerSparsity] = field(default_factory=list)
    parameters: int = 0
    nonzero_parameters: int = 0
    macs: int | None = None

    @property
    def zeros(self) -> int:
        """Exactly-zero entries over all conv/linear weights."""
        return sum(layer.zeros for layer in self.layers)

    @property
    def numel(self) -> int:
        """Entries of all conv/linear weights."""
        return sum(layer.numel for layer in self.layers)

    @property
    def global_sparsity(self) -> float:
        """Fraction of conv/linear weight entries that are exactly zero."""
        return self.zeros / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (layer name -> sparsity)."""
        return {
            "global_sparsity": self.global_sparsity,
            "parameters": self.parameters,
            "nonzero_parameters": self.nonzero_parameters,
            "macs": self.macs,
            "layers": {layer.name: {"shape": list(layer.shape), "sparsity": layer.sparsity}
                       for layer in self.layers},
        }

    def __str__(self) -> str:
        rows = [[layer.name, str(list(layer.shape)), f"{layer.sparsity:7.2%}"]
                for layer in self.layers]
        rows.append(["global", "", f"{self.global_sparsity:7.2%}"])
        lines = [text_table(["layer", "shape", "sparsity"], rows)]
        lines.append(f"parameters: {self.parameters:,} ({self.nonzero_parameters:,} non-zero)"
                     + (f", MACs: {self.macs:,}" if self.macs is not None else ""))
        return "\n".join(lines)


def sparsity_report(model: nn.Module, example_inputs: Any = None) -> SparsityReport:
    """Count zeros in every convolution and linear weight of ``model``.

    Args:
        model: Any module.
        example_inputs: If given, the MACs of one forward pass on them are included.
    """
    layers = []
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            zeros = int((weight == 0).sum())
            layers.append(LayerSparsity(name, tuple(weight.shape), zeros, weight.numel()))
        nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    macs = None
    if example_inputs is not None:
        from compressor.graph.macs import count_macs

        macs = count_macs(model, example_inputs)
    return SparsityReport(layers, count_parameters(model), nonzero, macs)


@dataclass(frozen=True)
class PruningStatus:
    """Measured state after an update.

    Attributes:
        target: The sparsity asked for.
        sparsity: Measured fraction removed of the pruned units (weights, channels, heads or
            blocks), counted from the masks.
        weight_sparsity: Fraction of exactly-zero entries over all conv/linear weights.
        per_unit: Measured sparsity per layer or group.
    """

    target: float
    sparsity: float
    weight_sparsity: float
    per_unit: dict[str, float]


def measure_status(zero: Mapping[str, torch.Tensor], parameters: Mapping[str, torch.Tensor],
                   reference: nn.Module, target: float) -> PruningStatus:
    """Status from the entirely-zero items per unit (``zero``: per layer for unstructured and
    n:m, per group where a channel or head counts when all its parameter slices are zero, over
    blocks where a block counts when its residual branches are zeroed), plus the fraction of
    zeros over all conv/linear weights (identified on ``reference``) of ``parameters``."""
    per_unit = {unit: float(flags.float().mean()) for unit, flags in zero.items()}
    total = sum(flags.numel() for flags in zero.values())
    measured = sum(int(flags.sum()) for flags in zero.values()) / total if total else 0.0
    weights = [parameters[name] for name in prunable_weights(reference) if name in parameters]
    numel = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return PruningStatus(target, measured, zeros / numel if numel else 0.0, per_unit)
