"""Making a channel-masked model compute exactly what its compacted version computes.

Zeroing every slice of a removed channel (producer rows, biases, norm scales, consumer columns)
already makes convolutions, linear layers, batch norm and residual adds agree with the compacted
model. LayerNorm-style modules are the exception: their statistics run over all channels, so
while channels are masked, :class:`MaskedNorms` recomputes them over the kept channels only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from compressor.graph.atoms import ChannelSelection

if TYPE_CHECKING:
    from compressor.graph.dependency import DependencyGraph

__all__ = ["MaskedNorms", "apply_masks"]


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked-out entries (``False``) of ``model``'s parameters in place."""
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name in parameters:
                parameters[name].mul_(mask.to(parameters[name].dtype))


class MaskedNorms:
    """Forward hooks on LayerNorm / RMSNorm modules that normalise over kept channels only.

    Args:
        model: The model whose norm modules get hooks.
        graph: Its dependency graph.
        selection: The removed channels (group index -> channel indices).
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, selection: ChannelSelection) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        removed = graph.removed_atoms(selection)
        if not removed:
            return
        for use in graph.norms:
            kept = graph.kept_positions(use.labels, removed, use.dim)
            module = model.get_submodule(use.module)
            weight = getattr(module, "weight", None)
            if weight is not None and len(kept) == weight.shape[-1]:
                continue
            self._handles.append(module.register_forward_hook(_norm_hook(kept, use.eps, use.dim)))

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> MaskedNorms:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _norm_hook(kept: list[int], eps: float, dim: int):  # noqa: ANN202 - hook factory
    index = torch.tensor(kept, dtype=torch.long)

    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        weight = module.weight[index] if getattr(module, "weight", None) is not None else None
        bias = module.bias[index] if getattr(module, "bias", None) is not None else None
        picked = x.index_select(dim, index.to(x.device)).movedim(dim, -1)
        if isinstance(module, nn.RMSNorm):
            normalised = F.rms_norm(picked, (len(kept),), weight, module.eps or eps)
        else:
            normalised = F.layer_norm(picked, (len(kept),), weight, bias, module.eps)
        out = torch.zeros_like(output)
        return out.index_copy(dim, index.to(x.device), normalised.movedim(-1, dim))

    return hook
