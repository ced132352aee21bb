"""Choosing how many channels every group keeps so that a cost budget is met at the least
predicted loss.

The search is greedy on marginal loss per saved cost: starting from the dense model, each step
narrows the one group whose next allowed width costs the least predicted loss increase per unit
of cost saved, until the budget is met. Costs are recomputed for the whole network at every
step, not summed per group: a group's width changes both the layers that produce its channels
and those that read them, so per-group costs are not additive (which a knapsack or a Lagrangian
relaxation would need); the loss side is additive over groups (each group's sensitivity is
measured alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from compressor.errors import ConfigError

__all__ = ["AllocationProblem", "Allocation", "allocate", "candidate_widths", "BudgetError"]


class BudgetError(ConfigError):
    """A budget that no allowed choice of widths meets (the message names the best value)."""

    def __init__(self, message: str, best: float) -> None:
        super().__init__(message)
        self.best = best


@dataclass(frozen=True)
class AllocationProblem:
    """What :func:`allocate` chooses among.

    Attributes:
        candidates: Per unit, its allowed kept channel counts, widest (all channels) first.
        loss: ``loss(unit, kept)``: predicted loss increase of keeping ``kept`` channels.
        cost: ``cost(choice)``: the network's cost (ms, MACs or parameters) for a choice.
    """

    candidates: Mapping[str, Sequence[int]]
    loss: Callable[[str, int], float]
    cost: Callable[[Mapping[str, int]], float]


@dataclass(frozen=True)
class Allocation:
    """A choice of kept channels and what it is predicted to cost and lose."""

    kept: dict[str, int]
    cost: float
    loss: float


def candidate_widths(size: int, step: int | None, min_channels: int, max_ratio: float,
                     fixed: int | None = None) -> list[int]:
    """Allowed kept counts of a group of ``size`` channels, widest first: multiples of
    ``step`` (any count when ``None``), at least ``min_channels`` and ``(1 - max_ratio)`` of
    the group; ``fixed`` (an override) allows only that count."""
    if fixed is not None:
        return [fixed]
    lowest = max(min(size, min_channels), math.ceil(size * (1.0 - max_ratio) - 1e-9))
    stride = step or 1
    widths = [k for k in range(size - 1, lowest - 1, -1) if k % stride == 0]
    return [size, *widths]


def allocate(problem: AllocationProblem, target: float, describe: Callable[[float], str] = str
             ) -> Allocation:
    """The greedy choice of kept channels whose cost is at most ``target``.

    Raises:
        BudgetError: even the narrowest allowed widths cost more than ``target`` (the message
            gives the best achievable value through ``describe``).
    """
    narrowest = {unit: widths[-1] for unit, widths in problem.candidates.items()}
    best = problem.cost(narrowest)
    if best > target:
        raise BudgetError(f"The budget cannot be met: the narrowest allowed widths reach "
                          f"{describe(best)}, short of {describe(target)}. Relax the budget, or "
                          "allow narrower groups (min_channels, max_ratio, channel_step) or "
                          "fewer ignored layers.", best)
    position = {unit: 0 for unit in problem.candidates}
    kept = {unit: widths[0] for unit, widths in problem.candidates.items()}
    cost = problem.cost(kept)
    while cost > target:
        step = _best_step(problem, position, kept, cost)
        if step is None:  # no single narrowing saves anything: take the narrowest
            kept, cost = dict(narrowest), best
            break
        unit, new_cost = step
        position[unit] += 1
        kept[unit] = problem.candidates[unit][position[unit]]
        cost = new_cost
    cost = _refill(problem, position, kept, cost, target)
    loss = sum(problem.loss(unit, count) for unit, count in kept.items())
    return Allocation(kept, cost, loss)


def _refill(problem: AllocationProblem, position: dict[str, int], kept: dict[str, int],
            cost: float, target: float) -> float:
    """Undo the overshoot of the last narrowing: widen groups back, one allowed step at a
    time (the largest loss reduction first), while the cost stays within ``target``."""
    while True:
        best: tuple[float, float, str, float] | None = None
        for unit, widths in problem.candidates.items():
            if position[unit] == 0:
                continue
            wider = widths[position[unit] - 1]
            new_cost = problem.cost({**kept, unit: wider})
            if new_cost > target:
                continue
            gain = problem.loss(unit, kept[unit]) - problem.loss(unit, wider)
            rank = (-gain, -new_cost)
            if best is None or rank < best[:2]:
                best = (*rank, unit, new_cost)
        if best is None:
            return cost
        unit, cost = best[2], best[3]
        position[unit] -= 1
        kept[unit] = problem.candidates[unit][position[unit]]


def _best_step(problem: AllocationProblem, position: Mapping[str, int], kept: Mapping[str, int],
               cost: float) -> tuple[str, float] | None:
    """The narrowing with the least loss increase per cost saved: ``(unit, new cost)``."""
    best: tuple[float, float, str, float] | None = None
    for unit, widths in problem.candidates.items():
        if position[unit] + 1 >= len(widths):
            continue
        narrower = widths[position[unit] + 1]
        trial = {**kept, unit: narrower}
        new_cost = problem.cost(trial)
        saved = cost - new_cost
        if saved <= 0:
            continue
        lost = max(0.0, problem.loss(unit, narrower) - problem.loss(unit, kept[unit]))
        rank = (lost / saved, -saved)
        if best is None or rank < best[:2]:
            best = (*rank, unit, new_cost)
    return None if best is None else (best[2], best[3])
