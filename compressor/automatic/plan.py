"""``plan_compression``: per-group channel ratios that meet a budget, chosen for the user.

Sensitivity curves (what each group's pruning costs in loss) and a cost model (exact MACs and
parameters; for latency budgets a table measured in ONNX Runtime) feed the greedy allocator.
For a latency budget the chosen widths are then checked on the real file: the compacted
candidate is exported in the deployed precision and timed side by side with the dense fp32
model; if the measured speed-up misses the budget by more than half the tolerance, the target
of the prediction is corrected by the measured ratio and the allocation repeated (at most
``corrections`` times). Every prediction and measurement is kept in the plan.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.automatic.allocate import Allocation, AllocationProblem, allocate, candidate_widths
from compressor.automatic.costs import Choice, CostModel, block_unit, build_cost_model
from compressor.automatic.latency import (
    LatencyTable,
    export_deployed,
    measure_channel_step,
    measure_layer_grid,
    measure_models,
    runtime_version,
    temporary_folder,
)
from compressor.automatic.sensitivity import Sensitivity, analyze_sensitivity
from compressor.graph.blocks import ResidualBlock, find_residual_blocks
from compressor.graph.surgery import CompactionStep, apply_step
from compressor.pruning.budget import Budget
from compressor.pruning.config import PruningConfig
from compressor.pruning.pruner import Pruner
from compressor.utils.io import atomic_write_json
from compressor.utils.names import matching
from compressor.utils.tables import markdown_table

#: Unit-name prefix of residual blocks in a plan.
BLOCK_PREFIX = block_unit("")

__all__ = ["CompressionPlan", "plan_compression", "compact_copy", "latency_table", "plain_model"]


@dataclass
class CompressionPlan:
    """What automatic allocation chose and why.

    Attributes:
        budget: The budget (as given).
        precision: Precision of the deployed file the latency refers to.
        sizes: Channels per unit before pruning.
        kept: Channels per unit chosen.
        names: A readable name per unit.
        channel_step: Kept counts are multiples of it (``None``: any).
        predicted: Predicted ``macs`` and ``params`` fractions, ``loss_increase`` and, for
            latency budgets, ``latency_ms`` and ``speedup``.
        checks: For latency budgets, each candidate measured: predicted and measured ms.
        seconds: Time spent per stage (``sensitivity``, ``latency_table``, ``allocation``).
    """

    budget: dict[str, Any]
    precision: str
    sizes: dict[str, int]
    kept: dict[str, int]
    names: dict[str, str]
    channel_step: int | None
    predicted: dict[str, float]
    checks: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ratios(self) -> dict[str, float]:
        """Per channel unit, the fraction of its channels removed."""
        return {unit: 1.0 - self.kept[unit] / self.sizes[unit] for unit in self.sizes
                if not unit.startswith(BLOCK_PREFIX)}

    @property
    def removed_blocks(self) -> list[str]:
        """Paths of the residual blocks replaced by the identity."""
        return [unit.removeprefix(BLOCK_PREFIX) for unit, kept in self.kept.items()
                if unit.startswith(BLOCK_PREFIX) and kept == 0]

    def kept_by_name(self) -> dict[str, int]:
        """Kept channels per group name (to map the plan onto a rebuilt pruner)."""
        return {self.names[unit]: self.kept[unit] for unit in self.ratios}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in checkpoints and reports)."""
        return {"budget": self.budget, "precision": self.precision, "sizes": self.sizes,
                "kept": self.kept, "names": self.names, "channel_step": self.channel_step,
                "predicted": self.predicted, "checks": self.checks, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionPlan:
        """Inverse of :meth:`to_dict`."""
        return cls(dict(data["budget"]), data["precision"], dict(data["sizes"]),
                   dict(data["kept"]), dict(data["names"]), data["channel_step"],
                   dict(data["predicted"]), list(data.get("checks", [])),
                   dict(data.get("seconds", {})))

    def to_markdown(self) -> str:
        """The chosen widths, one row per group, and the predicted figures."""
        rows = [[self.names.get(u, u), str(self.sizes[u]), str(self.kept[u]),
                 f"{1 - self.kept[u] / self.sizes[u]:.0%}"] for u in self.sizes]
        figures = ", ".join(f"{key} {value:.3g}" for key, value in self.predicted.items())
        return (markdown_table(["Group", "Channels", "Kept", "Removed"], rows)
                + f"\n\nBudget {self.budget}; predicted: {figures}.")

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    def plot(self, path: str | Path) -> Path:
        """Bar chart of the channels kept per group (PNG)."""
        from compressor.automatic.plots import plot_widths

        return plot_widths(self.names, self.sizes, self.kept, path,
                           f"Channels kept for {self.budget}")


def plain_model(pruner: Pruner) -> nn.Module:
    """The pruner's model as a plain module with its current weights (when another callback
    swapped it for an equivalent graph, e.g. QAT's, the reference module with its weights)."""
    if pruner.reference is pruner.model:
        return pruner.model
    plain = copy.deepcopy(pruner.reference)
    current = dict(pruner.model.named_parameters())
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name in current:
                parameter.copy_(current[name])
    return plain


def compact_copy(model: nn.Module, kept: Choice, example_inputs: Any,
                 ignore: Sequence[str] = ()) -> nn.Module:
    """A copy of ``model`` keeping ``kept`` channels per unit (the units of a channel
    ``Pruner`` with the same ``ignore``), physically compacted (the smallest-norm channels go),
    with the blocks ``kept`` marks 0 replaced by the identity."""
    model = copy.deepcopy(model)
    twin = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5, ignore=ignore),
                  example_inputs)
    sizes = {unit: len(twin.unit_set.groups[unit]) for unit in twin.units}
    twin.assign({unit: 1.0 - kept[unit] / sizes[unit] for unit in twin.units})
    twin.update(0.5)
    twin.compact()
    removed = [u.removeprefix(BLOCK_PREFIX) for u, k in kept.items()
               if u.startswith(BLOCK_PREFIX) and k == 0]
    if removed:
        apply_step(model, CompactionStep(identity=removed))
    return model


def removable_blocks(model: nn.Module, example_inputs: Any, ignore: Sequence[str]
                     ) -> list[ResidualBlock]:
    """The residual blocks of ``model`` that can be replaced exactly, minus ignored ones."""
    blocks = find_residual_blocks(model, example_inputs)
    ignored = matching(ignore, [b.path for b in blocks])
    return [block for block in blocks if block.path not in ignored]


def latency_table(model: nn.Module, costs: CostModel, example_inputs: torch.Tensor,
                  calibration: Sequence[Any], precision: str, batch: int, threads: int,
                  ignore: Sequence[str] = (), show_progress: bool = True) -> LatencyTable:
    """Measure the layer grid of ``model`` and fit the rest of the network from the dense and
    the half-width files (plus the dense fp32 reference), all measured side by side."""
    grid = measure_layer_grid(costs, precision, batch, threads, show_progress=show_progress)
    table = LatencyTable(precision, batch, threads, runtime_version(), grid)
    half = {unit: size if unit in costs.blocks else max(1, size // 2)
            for unit, size in costs.sizes.items()}
    with temporary_folder() as folder:
        files = {"reference": export_deployed(model, example_inputs, "fp32", Path(folder),
                                              "reference"),
                 "dense": export_deployed(model, example_inputs, precision, Path(folder),
                                          "dense", calibration),
                 "half": export_deployed(compact_copy(model, half, example_inputs, ignore),
                                         example_inputs, precision, Path(folder), "half",
                                         calibration)}
        measured = measure_models(files, batch, threads)
    table.reference_ms, table.dense_ms = measured["reference"], measured["dense"]
    table.fit_remainder(costs, [(costs.dense(), measured["dense"]), (half, measured["half"])])
    return table


def plan_compression(pruner: Pruner, batches: Sequence[tuple[Any, torch.Tensor]],
                     budget: Budget, precision: str = "fp32", *, show_progress: bool = True,
                     corrections: int = 2) -> CompressionPlan:
    """Choose per-group channel ratios of ``pruner`` (channel granularity) that meet
    ``budget`` at the least predicted loss increase.

    Args:
        pruner: A channel ``Pruner`` of the model in its current state.
        batches: Validation ``(inputs, targets)`` batches for the sensitivity analysis (their
            inputs also calibrate the int8 files timed for latency budgets).
        budget: What to reach.
        precision: ``"int8"`` or ``"fp32"``: the deployed file latency budgets refer to.
        show_progress: Progress bars for the long steps.
        corrections: Re-allocations after measuring a latency candidate on the real file.

    Raises:
        BudgetError: the budget cannot be met (the message names the best achievable value).
    """
    clock = _Stopwatch()
    example = _example(batches)
    model = plain_model(pruner)
    blocks = removable_blocks(model, example, pruner.config.ignore) if budget.blocks else []
    costs = build_cost_model(model, pruner.unit_set.groups, example[:1],
                             [b.path for b in blocks])
    sensitivity = analyze_sensitivity(pruner, batches[:budget.max_batches], ratios=budget.ratios,
                                      blocks=blocks, show_progress=show_progress)
    clock.lap("sensitivity")
    calibration = [inputs for inputs, _ in batches[:4]]
    table = latency_table(model, costs, example, calibration, precision, budget.batch,
                          budget.threads, pruner.config.ignore, show_progress) \
        if budget.is_latency else None
    step = _channel_step(budget, costs, precision)
    clock.lap("latency_table")
    problem = _problem(pruner, costs, sensitivity, budget, step, table)
    target, describe = _target(budget, costs, table)
    chosen = allocate(problem, target, describe)
    checks: list[dict[str, float]] = []
    if table is not None:
        with temporary_folder() as folder:
            candidate = _Candidate(model, pruner.config.ignore, table, example, calibration,
                                   Path(folder))
            chosen = _checked(problem, chosen, target, describe, budget, candidate, checks,
                              corrections)
    clock.lap("allocation")
    return CompressionPlan(budget.settings(), precision, dict(costs.sizes), chosen.kept,
                           {u: sensitivity.names.get(u, u) for u in costs.sizes}, step,
                           _predicted(costs, chosen, table), checks, clock.laps)


class _Stopwatch:
    """Seconds per named stage."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


def _example(batches: Sequence[tuple[Any, torch.Tensor]]) -> torch.Tensor:
    inputs = batches[0][0]
    return (inputs if isinstance(inputs, torch.Tensor) else inputs[0])[:2].detach().clone()


def _channel_step(budget: Budget, costs: CostModel, precision: str) -> int | None:
    """The step kept counts are multiples of: measured for latency budgets (``auto``); MACs and
    parameters do not depend on kernel blocking, so ``auto`` means any count for them."""
    if budget.channel_step != "auto":
        return budget.channel_step
    if not budget.is_latency:
        return None
    step, _ = measure_channel_step(costs, precision, budget.batch, budget.threads)
    return step


def _problem(pruner: Pruner, costs: CostModel, sensitivity: Sensitivity, budget: Budget,
             step: int | None, table: LatencyTable | None) -> AllocationProblem:
    fixed = {unit: max(1, round(costs.sizes[unit] * (1 - pruner.sparsities[unit])))
             for unit in pruner.overridden}
    candidates = {unit: candidate_widths(costs.sizes[unit], step, budget.min_channels,
                                         budget.max_ratio, fixed.get(unit))
                  for unit in pruner.units}
    candidates.update({unit: [1, 0] for unit in costs.blocks})

    def loss(unit: str, kept: int) -> float:
        return sensitivity.loss_increase(unit, 1.0 - kept / costs.sizes[unit])

    measures = {"macs": costs.macs, "params": costs.params}
    cost = measures.get(budget.kind) or (lambda choice: table.predict(costs, choice))  # type: ignore[union-attr]
    return AllocationProblem(candidates, loss, cost)


def _target(budget: Budget, costs: CostModel, table: LatencyTable | None) -> tuple[float, Any]:
    """The cost target of ``budget`` and a formatter of costs in the budget's terms."""
    dense = costs.dense()
    if budget.kind in ("macs", "params"):
        total = costs.macs(dense) if budget.kind == "macs" else costs.params(dense)
        return budget.value * total, lambda c: f"{c / total:.1%} of the {budget.kind}"
    assert table is not None
    if budget.kind == "latency_ms":
        return budget.value, lambda ms: f"{ms:.3g} ms"
    return table.reference_ms / budget.value, \
        lambda ms: f"{table.reference_ms / ms:.2f}x over dense fp32"


@dataclass
class _Candidate:
    """How a candidate choice is measured on the real file."""

    model: nn.Module
    ignore: Sequence[str]
    table: LatencyTable
    example: torch.Tensor
    calibration: Sequence[Any]
    folder: Path

    @functools.cached_property
    def reference(self) -> Path:
        """The dense fp32 file, exported once for every check."""
        return export_deployed(self.model, self.example, "fp32", self.folder, "reference")

    def measure(self, kept: Choice) -> float:
        """The candidate's latency, expressed against the table's fp32 reference (both files
        are timed side by side)."""
        compacted = compact_copy(self.model, kept, self.example, self.ignore)
        files = {"candidate": export_deployed(compacted, self.example, self.table.precision,
                                              self.folder, "candidate", self.calibration),
                 "reference": self.reference}
        measured = measure_models(files, self.table.batch, self.table.threads)
        return measured["candidate"] * self.table.reference_ms / measured["reference"]


def _checked(problem: AllocationProblem, chosen: Allocation, target: float, describe: Any,
             budget: Budget, candidate: _Candidate, checks: list[dict[str, float]],
             corrections: int) -> Allocation:
    """Measure the candidate on the real file; correct the prediction's target if it misses."""
    aim = target
    for attempt in range(corrections + 1):
        measured = candidate.measure(chosen.kept)
        checks.append({"predicted_ms": chosen.cost, "measured_ms": measured,
                       "target_ms": target, "reference_ms": candidate.table.reference_ms})
        too_slow = measured > target * (1 + budget.tolerance / 2)
        too_fast = measured < target * (1 - budget.tolerance / 2) and \
            any(chosen.kept[u] < widths[0] for u, widths in problem.candidates.items())
        if attempt == corrections or not (too_slow or too_fast):
            break
        aim *= target / measured
        corrected = allocate(problem, aim, describe)
        if corrected.kept == chosen.kept:
            break
        chosen = corrected
    return chosen


def _predicted(costs: CostModel, chosen: Allocation, table: LatencyTable | None
               ) -> dict[str, float]:
    dense = costs.dense()
    predicted = {"macs": costs.macs(chosen.kept) / costs.macs(dense),
                 "params": costs.params(chosen.kept) / costs.params(dense),
                 "loss_increase": chosen.loss}
    if table is not None:
        latency = table.predict(costs, chosen.kept)
        predicted.update({"latency_ms": latency, "speedup": table.reference_ms / latency})
    return predicted
