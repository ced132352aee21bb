"""Turning scores and a sparsity target into removal decisions, per unit or globally.

A *unit* is what sparsity is measured over: one layer's weight (unstructured, n:m) or one group
of coupled channels/heads (channel, head). Items already removed stay removed (masks only grow).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

import torch

from compressor.errors import ConfigError, closest_names

__all__ = ["matching", "check_patterns", "unit_sparsities", "select_uniform", "select_global"]


def matching(patterns: Iterable[str], names: Iterable[str]) -> set[str]:
    """Names matched by any ``fnmatch`` pattern (a pattern also matches a name's children)."""
    names = list(names)
    found: set[str] = set()
    for pattern in patterns:
        found |= {n for n in names if fnmatch.fnmatchcase(n, pattern)
                  or fnmatch.fnmatchcase(n, pattern + ".*")}
    return found


def check_patterns(argument: str, patterns: Iterable[str], names: Sequence[str]) -> None:
    """Raise ``ConfigError`` for a pattern that matches none of ``names``."""
    for pattern in patterns:
        if not matching([pattern], names):
            close = closest_names(pattern, names)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"`{argument}` entry {pattern!r} matches no layer.{hint} "
                              f"Layers: {shown}")


def unit_sparsities(units: Mapping[str, Sequence[str]], default: float,
                    overrides: Mapping[str, float]) -> dict[str, float]:
    """Sparsity per unit: the first override whose pattern matches one of the unit's module
    names, else ``default``."""
    result = {}
    for unit, modules in units.items():
        result[unit] = default
        for pattern, value in overrides.items():
            if matching([pattern], modules):
                result[unit] = value
                break
    return result


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
