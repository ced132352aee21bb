"""Allocation: turning scores and a sparsity target into removal decisions, per unit or globally.

A *unit* is what sparsity is measured over: one layer's weight (unstructured, n:m), one group
of coupled channels/heads (channel, head) or the set of residual blocks. Items already removed
stay removed (masks only grow). An :class:`Allocator` is the replaceable step of a ``Pruner``
update: it receives an :class:`AllocationRequest` and returns the new removal decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from compressor.errors import ConfigError
from compressor.pruning.config import Allocation, Granularity, PruningConfig
from compressor.utils.names import check_patterns, matching

__all__ = ["unit_sparsities", "checked_unit_sparsities", "select_uniform", "select_global",
           "AllocationRequest", "Allocator", "UniformAllocation", "GlobalAllocation", "NMPattern",
           "default_allocator"]


def unit_sparsities(units: Mapping[str, Sequence[str]], default: float,
                    overrides: Mapping[str, float]) -> tuple[dict[str, float], frozenset[str]]:
    """Sparsity per unit: the first override whose pattern matches one of the unit's module
    names, else ``default``; and the set of units an override matched.

    Raises:
        ConfigError: an ``overrides`` pattern matches none of the units' modules.
    """
    check_patterns("overrides", overrides, sorted({m for ms in units.values() for m in ms}))
    result, overridden = {}, set()
    for unit, modules in units.items():
        result[unit] = default
        for pattern, value in overrides.items():
            if matching([pattern], modules):
                result[unit] = value
                overridden.add(unit)
                break
    return result, frozenset(overridden)


def checked_unit_sparsities(units: Sequence[str], sparsities: Mapping[str, float]
                            ) -> dict[str, float]:
    """``sparsities`` in the order of ``units`` once every unit has one, in ``[0, 1)``.

    Raises:
        ConfigError: a unit is missing or unknown, or a value is out of range.
    """
    missing, unknown = sorted(set(units) - set(sparsities)), sorted(set(sparsities) - set(units))
    if missing or unknown:
        raise ConfigError(f"Unit sparsities must name every unit: missing {missing}, unknown "
                          f"{unknown}.")
    bad = {unit: value for unit, value in sparsities.items() if not 0.0 <= value < 1.0}
    if bad:
        raise ConfigError(f"Unit sparsities must be in [0, 1), got {bad}.")
    return {unit: float(sparsities[unit]) for unit in units}


def _lowest(scores: torch.Tensor, removed: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean removal mask of the ``count`` lowest scores, previously removed ones first."""
    count = max(count, int(removed.sum()))
    ranked = torch.where(removed, torch.full_like(scores, -float("inf")), scores.float())
    out = torch.zeros_like(removed)
    if count > 0:
        out[torch.argsort(ranked, stable=True)[:count]] = True
    return out


def select_uniform(scores: torch.Tensor, removed: torch.Tensor, sparsity: float,
                   keep_at_least: int = 0) -> torch.Tensor:
    """Remove ``round(sparsity * n)`` of the flat ``scores`` (never more than
    ``n - keep_at_least``)."""
    total = scores.numel()
    count = min(int(round(sparsity * total)), total - keep_at_least)
    return _lowest(scores.flatten(), removed.flatten(), count).view_as(removed)


def select_global(scores: Sequence[torch.Tensor], removed: Sequence[torch.Tensor],
                  sparsity: float, keep_at_least: int = 0,
                  normalise: bool = False) -> list[torch.Tensor]:
    """One ranking across units: remove ``round(sparsity * total)`` lowest scores overall,
    each unit keeping at least ``keep_at_least`` items. With ``normalise``, scores are divided
    by their unit's mean so units of different scales compete fairly."""
    flats = []
    for unit_scores in scores:
        flat = unit_scores.flatten().float()
        if normalise:
            flat = flat / flat.mean().clamp_min(1e-12)
        flats.append(flat)
    sizes = [f.numel() for f in flats]
    total = sum(sizes)
    target = int(round(sparsity * total))
    all_scores = torch.cat(flats)
    all_removed = torch.cat([r.flatten() for r in removed])
    ranked = torch.where(all_removed, torch.full_like(all_scores, -float("inf")), all_scores)
    order = torch.argsort(ranked, stable=True)
    owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    budget = [size - keep_at_least for size in sizes]
    chosen = torch.zeros(total, dtype=torch.bool)
    count = 0
    for index in order.tolist():
        if count >= max(target, int(all_removed.sum())):
            break
        unit = int(owner[index])
        if budget[unit] <= 0:
            continue
        budget[unit] -= 1
        chosen[index] = True
        count += 1
    return [part.view_as(r) for part, r in zip(torch.split(chosen, sizes), removed)]


@dataclass(frozen=True)
class AllocationRequest:
    """Everything an allocator may use for one update.

    Attributes:
        scores: Per unit, the importance of each item (any shape; removal follows it).
        removed: Per unit, the current flat removal decisions (they only grow).
        sparsities: Per unit, the sparsity asked for at this step (overrides applied).
        target: The overall sparsity asked for at this step.
        overridden: Units whose sparsity an ``overrides`` pattern fixes.
        keep_at_least: Items every unit keeps.
        normalise: Whether scores of different units should be put on one scale first.
    """

    scores: Mapping[str, torch.Tensor]
    removed: Mapping[str, torch.Tensor]
    sparsities: Mapping[str, float]
    target: float
    overridden: frozenset[str] = frozenset()
    keep_at_least: int = 0
    normalise: bool = False


class Allocator(Protocol):
    """Chooses what to remove: ``allocator(request) -> {unit: flat boolean removal mask}``."""

    def __call__(self, request: AllocationRequest) -> dict[str, torch.Tensor]: ...


class UniformAllocation:
    """Every unit reaches its own sparsity, ranking its items by score."""

    def __call__(self, request: AllocationRequest) -> dict[str, torch.Tensor]:
        return {unit: _uniform(request, unit) for unit in request.scores}


class GlobalAllocation:
    """One ranking across the units no override fixes (each keeps ``keep_at_least``); the
    overridden units reach their own sparsity."""

    def __call__(self, request: AllocationRequest) -> dict[str, torch.Tensor]:
        pooled = [u for u in request.scores if u not in request.overridden]
        result = {u: _uniform(request, u) for u in request.scores if u in request.overridden}
        if pooled:
            scores = [request.scores[u] for u in pooled]
            removed = [request.removed[u].view(s.shape) for u, s in zip(pooled, scores)]
            chosen = select_global(scores, removed, request.target, request.keep_at_least,
                                   request.normalise)
            result.update({u: mask.flatten() for u, mask in zip(pooled, chosen)})
        return {u: result[u] for u in request.scores}


class NMPattern:
    """N:M: in every run of ``m`` weights along the input dimension, keep the ``n`` best."""

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m

    def __call__(self, request: AllocationRequest) -> dict[str, torch.Tensor]:
        return {unit: self._removed(scores) for unit, scores in request.scores.items()}

    def _removed(self, scores: torch.Tensor) -> torch.Tensor:
        grouped = _to_input_last(scores).reshape(-1, self.m)
        keep = torch.zeros_like(grouped, dtype=torch.bool)
        keep.scatter_(1, torch.topk(grouped, self.n, dim=1).indices, True)
        return (~_from_input_last(keep.reshape(_to_input_last(scores).shape), scores.shape)).flatten()


def default_allocator(config: PruningConfig) -> Allocator:
    """The allocator a config names: the N:M pattern for ``n:m``, else ``uniform`` or
    ``global`` ranking."""
    if Granularity(config.granularity) is Granularity.NM:
        return NMPattern(config.n, config.m)
    if Allocation(config.allocation) is Allocation.GLOBAL:
        return GlobalAllocation()
    return UniformAllocation()


def _uniform(request: AllocationRequest, unit: str) -> torch.Tensor:
    scores = request.scores[unit]
    return select_uniform(scores, request.removed[unit].view(scores.shape),
                          request.sparsities[unit], request.keep_at_least).flatten()


def _to_input_last(tensor: torch.Tensor) -> torch.Tensor:
    """``(O, I, *k)`` -> ``(O, *k, I)`` so groups of M run along the input dimension."""
    return tensor.movedim(1, -1) if tensor.ndim > 2 else tensor


def _from_input_last(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return tensor.movedim(-1, 1).reshape(shape) if len(shape) > 2 else tensor.reshape(shape)
