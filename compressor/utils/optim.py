"""Keeping optimizers valid when a model's parameters are replaced by smaller ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = ["replace_parameters"]

Replacement = Mapping[nn.Parameter, tuple[nn.Parameter, Mapping[int, list[int]]]]


def replace_parameters(optimizer: torch.optim.Optimizer, replaced: Replacement,
                       removed: Iterable[nn.Parameter] = ()) -> int:
    """Swap old parameters for their compacted versions inside ``optimizer``, slicing the
    per-parameter state (momentum, Adam moments) with the same kept indices, so training
    continues as if the removed entries had never existed; parameters in ``removed`` (whole
    modules that left the model) are dropped with their state. Returns the number swapped."""
    gone = {id(parameter) for parameter in removed}
    for group in optimizer.param_groups:
        for parameter in [p for p in group["params"] if id(p) in gone]:
            optimizer.state.pop(parameter, None)
        group["params"] = [p for p in group["params"] if id(p) not in gone]
    by_id = {id(old): value for old, value in replaced.items()}
    swapped = 0
    for group in optimizer.param_groups:
        for position, parameter in enumerate(group["params"]):
            if id(parameter) not in by_id:
                continue
            new, kept = by_id[id(parameter)]
            group["params"][position] = new
            state = optimizer.state.pop(parameter, None)
            if state:
                optimizer.state[new] = {key: _slice(value, parameter.shape, kept)
                                        for key, value in state.items()}
            swapped += 1
    return swapped


def _slice(value: object, shape: torch.Size, kept: Mapping[int, list[int]]) -> object:
    if not isinstance(value, torch.Tensor) or value.shape != shape:
        return value
    for dim, indices in sorted(kept.items()):
        value = value.index_select(dim, torch.as_tensor(indices, device=value.device))
    return value.clone()
