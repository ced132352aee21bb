"""Sensitivity analysis: how much each channel group hurts when it alone is pruned.

For every prunable group and every ratio, the group's lowest-scoring channels are zeroed (the
rest of the model untouched), the loss and accuracy are measured on a few validation batches,
and the weights are restored. No training happens; the cost is ``groups x ratios x
max_batches`` forward passes. Results are cached by a fingerprint of the weights, the batches
and the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from compressor.automatic.costs import block_unit
from compressor.distillation.kd import logits_of
from compressor.errors import CompressorError, ConfigError
from compressor.graph.blocks import ResidualBlock
from compressor.pruning.allocation import select_uniform
from compressor.pruning.pruner import Pruner
from compressor.utils.cache import cache_key, read_cached, write_cached
from compressor.utils.inputs import as_args
from compressor.utils.io import atomic_write_json
from compressor.utils.modes import temporary_mode
from compressor.utils.progress import progress

__all__ = ["Sensitivity", "analyze_sensitivity", "evaluation_batches"]

LossFunction = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass
class Sensitivity:
    """Loss and accuracy after pruning each group alone.

    Attributes:
        ratios: The pruning ratios measured.
        baseline: ``{"loss", "accuracy"}`` of the unpruned model on the same batches.
        curves: Per unit, one ``{"ratio", "loss", "accuracy"}`` point per ratio.
        names: Per unit, a readable name (the first module producing its channels).
    """

    ratios: tuple[float, ...]
    baseline: dict[str, float]
    curves: dict[str, list[dict[str, float]]]
    names: dict[str, str] = field(default_factory=dict)

    def loss_increase(self, unit: str, ratio: float) -> float:
        """Predicted loss increase of pruning ``unit`` at ``ratio`` (piecewise linear through
        the measured points, non-decreasing, extended at the last slope beyond them)."""
        if ratio <= 0:
            return 0.0
        xs = [0.0] + [point["ratio"] for point in self.curves[unit]]
        ys = [0.0]
        for point in self.curves[unit]:
            ys.append(max(ys[-1], point["loss"] - self.baseline["loss"]))
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if ratio <= x1:
                return y0 + (y1 - y0) * (ratio - x0) / (x1 - x0)
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return ys[-1] + slope * (ratio - xs[-1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"ratios": list(self.ratios), "baseline": self.baseline, "curves": self.curves,
                "names": self.names}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sensitivity:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(data["ratios"]), dict(data["baseline"]), dict(data["curves"]),
                   dict(data.get("names", {})))

    def save(self, path: str | Path) -> Path:
        """Write the curves as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    def plot(self, path: str | Path) -> Path:
        """Plot the loss increase of every group against its ratio (PNG, written atomically)."""
        from compressor.automatic.plots import plot_sensitivity

        return plot_sensitivity(self, path)


def evaluation_batches(loader: Iterable[Any], max_batches: int) -> list[tuple[Any, torch.Tensor]]:
    """The first ``max_batches`` ``(inputs, targets)`` batches of ``loader``.

    Raises:
        ConfigError: the loader is empty or its batches are not ``(inputs, targets)``.
    """
    batches = []
    for batch in loader:
        if len(batches) >= max_batches:
            break
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2
                and isinstance(batch[1], torch.Tensor)):
            raise ConfigError("Sensitivity analysis needs batches of (inputs, targets), got "
                              f"{type(batch).__name__}; pass a loader of (x, y) pairs or a "
                              "`loss_fn` with batches it understands.")
        batches.append((batch[0], batch[1]))
    if not batches:
        raise ConfigError("The loader for sensitivity analysis is empty; give it at least one "
                          "batch.")
    return batches


def analyze_sensitivity(pruner: Pruner, batches: Sequence[tuple[Any, torch.Tensor]], *,
                        ratios: Sequence[float] = (0.25, 0.5, 0.75),
                        blocks: Sequence[ResidualBlock] = (),
                        loss_fn: LossFunction | None = None, show_progress: bool = True,
                        cache: bool = True) -> Sensitivity:
    """Measure every group of ``pruner`` (channel granularity) pruned alone at ``ratios``, and
    every residual block of ``blocks`` removed alone (unit ``"block:<path>"``, ratio 1).

    Channels are ranked by the pruner's criterion on the current weights. The model is left
    exactly as it was.

    Args:
        pruner: A channel ``Pruner`` of the model (its masks are not touched).
        batches: ``(inputs, targets)`` pairs, e.g. from :func:`evaluation_batches`.
        ratios: Fractions of each group's channels removed, in ``(0, 1)``.
        loss_fn: ``loss_fn(output, targets)``; default cross-entropy on the logits (the output
            tensor, or its ``logits`` as in transformers' outputs).
        show_progress: Show a progress bar.
        cache: Reuse (and store) the result for the same weights, batches and settings.
    """
    ratios = tuple(sorted(float(r) for r in ratios))
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise ConfigError(f"`ratios` must be fractions in (0, 1), got {ratios}.")
    model = pruner.model
    key = _fingerprint(model, batches, (ratios, [b.path for b in blocks]), pruner) \
        if cache else ""
    cached = read_cached("sensitivity", key) if cache else None
    if cached is not None:
        return Sensitivity.from_dict(cached)
    evaluate = _evaluator(model, batches, loss_fn or _cross_entropy)
    scores = pruner.scores()
    baseline = evaluate()
    curves: dict[str, list[dict[str, float]]] = {}
    work: list[tuple[str, float, Mapping[str, torch.Tensor]]] = []
    for unit in pruner.units:
        for ratio in ratios:
            removed = select_uniform(scores[unit], torch.zeros_like(scores[unit], dtype=torch.bool),
                                     ratio, keep_at_least=1)
            work.append((unit, ratio, pruner.unit_set.masks(model, {unit: removed})))
    parameters = dict(model.named_parameters())
    for block in blocks:
        work.append((block_unit(block.path), 1.0,
                     {n: torch.zeros_like(parameters[n], dtype=torch.bool)
                      for n in block.branch_ends if n in parameters}))
    for unit, ratio, masks in progress(work, "Sensitivity", len(work), show_progress):
        with _zeroed(model, masks):
            curves.setdefault(unit, []).append({"ratio": ratio, **evaluate()})
    names = {unit: pruner.unit_set.groups[unit].name for unit in pruner.units}
    names.update({block_unit(block.path): block.path for block in blocks})
    result = Sensitivity(ratios, baseline, curves, names)
    if cache:
        write_cached("sensitivity", key, result.to_dict())
    return result


def _cross_entropy(output: Any, targets: torch.Tensor) -> torch.Tensor:
    logits = _logits(output)
    if logits is None:
        raise ConfigError(f"The model returns a {type(output).__name__}, not logits (nor an "
                          "object with a `logits` tensor); pass `loss_fn(output, targets)` to "
                          "analyze_sensitivity.")
    return F.cross_entropy(logits, targets)


def _evaluator(model: nn.Module, batches: Sequence[tuple[Any, torch.Tensor]],
               loss_fn: LossFunction) -> Callable[[], dict[str, float]]:
    def evaluate() -> dict[str, float]:
        total_loss, correct, count = 0.0, 0, 0
        with temporary_mode(model, False), torch.no_grad():
            for inputs, targets in batches:
                output = model(*as_args(inputs))
                total_loss += float(loss_fn(output, targets)) * len(targets)
                logits = _logits(output)
                if logits is not None and logits.ndim == 2:
                    correct += int((logits.argmax(1) == targets).sum())
                count += len(targets)
        return {"loss": total_loss / count, "accuracy": correct / count}
    return evaluate


def _logits(output: Any) -> torch.Tensor | None:
    try:
        return logits_of(output, "model")
    except CompressorError:
        return None


class _zeroed:
    """Context: multiply parameters by boolean keep-masks, restore them afterwards."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        parameters = dict(model.named_parameters())
        self.targets = {name: parameters[name] for name in masks}
        self.masks = masks
        self.saved: dict[str, torch.Tensor] = {}

    def __enter__(self) -> None:
        with torch.no_grad():
            for name, parameter in self.targets.items():
                self.saved[name] = parameter.detach().clone()
                parameter.mul_(self.masks[name].to(parameter.dtype))

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for name, parameter in self.targets.items():
                parameter.copy_(self.saved[name])


def _fingerprint(model: nn.Module, batches: Sequence[tuple[Any, torch.Tensor]],
                 settings: Any, pruner: Pruner) -> str:
    tensors = [t.detach().cpu().contiguous() for t in model.state_dict().values()
               if isinstance(t, torch.Tensor)]
    data = [t.detach().cpu().contiguous() for inputs, targets in batches
            for t in (*as_args(inputs), targets) if isinstance(t, torch.Tensor)]
    blobs = b"".join(t.numpy().tobytes() if t.dtype != torch.bfloat16 else
                     t.float().numpy().tobytes() for t in tensors + data)
    return cache_key(type(model).__qualname__, settings, pruner.units,
                     pruner.config.criterion.value, blobs)
