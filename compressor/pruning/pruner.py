"""``Pruner``: the library object behind the ``Pruning`` callback (no Lightning needed)::

    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5), inputs)
    pruner.attach(optimizer)        # masks stay enforced from now on; while training call
    pruner.accumulate()             # after backward (gradient criteria) and, at the events of
    pruner.update(schedule(step))   # a schedule (make_schedule), update the masks
    pruner.compact()                # channel/head/block: physically smaller
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.graph.dependency import DependencyGraph
from compressor.graph.surgery import CompactionResult
from compressor.pruning.allocation import (
    AllocationRequest,
    Allocator,
    checked_unit_sparsities,
    default_allocator,
    unit_sparsities,
)
from compressor.pruning.config import Granularity, PruningConfig
from compressor.pruning.criteria import Criterion, make_criterion, norm_weight_names
from compressor.pruning.masks import MaskSet
from compressor.pruning.report import PruningStatus, measure_status
from compressor.pruning.units import GroupUnits, PruningUnits, make_units
from compressor.utils.modes import refresh_mode_state

__all__ = ["Pruner", "PruningStatus"]


class Pruner:
    """Computes and enforces pruning masks on ``model`` for one :class:`PruningConfig`.

    What differs per granularity lives in :mod:`compressor.pruning.units`; the ``allocator``
    chooses what to remove.

    Args:
        model: The model to prune (masks are applied in place).
        config: What to prune.
        example_inputs: Inputs for one forward pass; required for ``channel``, ``head`` and
            ``block`` granularity (to trace the model).
        reference: A module with the same parameter names whose layer types identify the
            prunable weights, when ``model`` no longer has them (e.g. a QAT-prepared graph of
            the same network). Defaults to ``model``.
        allocator: Replaces the allocation the config names (see :func:`default_allocator`).

    Raises:
        ConfigError: nothing prunable, or an ``overrides`` / ``ignore`` pattern that matches
            no layer.
    """

    def __init__(self, model: nn.Module, config: PruningConfig, example_inputs: Any = None,
                 reference: nn.Module | None = None, allocator: Allocator | None = None) -> None:
        self.model = model
        self.reference = reference if reference is not None else model
        self.config = config
        self.granularity = Granularity(config.granularity)
        self.allocator = allocator if allocator is not None else default_allocator(config)
        self.masks = MaskSet()
        self.compacted = False
        self.criterion: Criterion = make_criterion(config.criterion, config.seed,
                                                   norm_weight_names(self.reference))
        self.unit_set: PruningUnits = make_units(self.reference, config, example_inputs)
        if not self.unit_set.names:
            raise ConfigError(f"Nothing to prune in {type(self.model).__name__}: "
                              f"{self.unit_set.description}.{self.unit_set.hint(config)}")
        self.unit_modules = {unit: self.unit_set.modules_of(unit) for unit in self.units}
        self.sparsities, self.overridden = unit_sparsities(self.unit_modules, config.target,
                                                           config.overrides)
        parameters = dict(model.named_parameters())
        self.removed = {unit: torch.zeros(self.unit_set.size(unit, parameters), dtype=torch.bool)
                        for unit in self.units}

    @property
    def units(self) -> list[str]:
        """The unit names (layers, groups or ``"blocks"``)."""
        return self.unit_set.names

    @property
    def graph(self) -> DependencyGraph | None:
        """The dependency graph (channel and head granularity), else ``None``."""
        return self.unit_set.graph if isinstance(self.unit_set, GroupUnits) else None

    @property
    def has_gradient_scores(self) -> bool:
        """Whether a gradient-based criterion has accumulated statistics."""
        return bool(getattr(self.criterion, "count", 0))

    def rebind(self, model: nn.Module) -> None:
        """Follow a replacement of the model by an equivalent module with the same parameter
        names (e.g. after another callback swapped it); masks are re-applied."""
        self.masks.rebind(model)
        self.unit_set.release()
        self.model = model

    def accumulate(self) -> None:
        """Record gradient statistics (call after ``backward``; no-op for magnitude criteria)."""
        if self.criterion.needs_gradients and not self.compacted:
            parameters = dict(self.model.named_parameters())
            self.criterion.accumulate({n: parameters[n] for n in
                                       self.unit_set.scored_parameters(parameters)
                                       if n in parameters})

    def scores(self) -> dict[str, torch.Tensor]:
        """Importance of every item of every unit under the criterion."""
        parameters = dict(self.model.named_parameters())

        def element(name: str) -> torch.Tensor:
            return self.criterion.scores(name, parameters[name]).float()

        return {unit: self.unit_set.scores(unit, element, parameters) for unit in self.units}

    def update(self, sparsity: float | None = None) -> PruningStatus:
        """Compute masks for ``sparsity`` (default: the config's target, overrides applied
        proportionally) and apply them. Masks only grow: removed items stay removed."""
        if self.compacted:
            raise ConfigError("This model was already compacted; create a new Pruner to prune "
                              "it further.")
        target = self.config.target if sparsity is None else float(sparsity)
        if target > 0:
            self.removed = self.allocator(self._request(target))
            self._apply()
        return self.status(target)

    def assign(self, sparsities: dict[str, float]) -> None:
        """Give every unit its final sparsity (:meth:`update` scales them by its target)."""
        self.sparsities, self.overridden = (checked_unit_sparsities(self.units, sparsities),
                                            frozenset(self.units))

    def _request(self, target: float) -> AllocationRequest:
        scale = target / self.config.target if self.config.target else 0.0
        return AllocationRequest(self.scores(), self.removed,
                                 {u: self.sparsities[u] * scale for u in self.units}, target,
                                 self.overridden, self.unit_set.keep_at_least,
                                 self.unit_set.normalise_scores)

    def selection(self) -> dict[int, list[int]]:
        """Removed channels as group index -> channel indices (channel/head granularity)."""
        return self.unit_set.selection(self.removed)

    def _apply(self) -> None:
        self.masks.update(self.unit_set.masks(self.model, self.removed))
        self.masks.apply(self.model)
        refresh_mode_state(self.model)
        self.unit_set.masks_applied(self.model, self.removed)

    def attach(self, optimizers: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] = ()) -> None:
        """Keep masked entries at zero through training with ``optimizers``."""
        self.masks.attach(self.model, optimizers)

    def detach(self) -> None:
        """Stop enforcing the masks and remove the masked-norm hooks."""
        self.masks.detach()
        self.unit_set.release()

    def status(self, target: float | None = None) -> PruningStatus:
        """Sparsity measured from the model's actual zeros (see :func:`measure_status`)."""
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            zero = self.unit_set.measured_zero(parameters)
        return measure_status(zero, parameters, self.reference,
                              self.config.target if target is None else target)

    def compact(self) -> CompactionResult:
        """Physically remove the pruned channels, heads or blocks (in place)."""
        if not self.granularity.structured:
            raise ConfigError(f"granularity {self.granularity.value!r} keeps tensor shapes; only "
                              "channel, head and block pruning can be compacted.")
        self.detach()
        result = self.unit_set.compact(self.model, self.removed)
        self.masks.clear()
        self.compacted = True
        return result

    def state_dict(self) -> dict[str, Any]:
        """Removal decisions, masks and accumulated scores (for checkpoints)."""
        return {"removed": {u: r.clone() for u, r in self.removed.items()},
                "masks": self.masks.state_dict(), "criterion": self.criterion.state_dict(),
                "compacted": self.compacted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (masks are re-applied to the model)."""
        if set(state.get("removed", {})) != set(self.removed):
            raise ConfigError("The saved pruning state does not match this model's prunable "
                              "units; was it saved with the same model and settings?")
        self.removed = {u: r.clone().bool() for u, r in state["removed"].items()}
        self.criterion.load_state_dict(state.get("criterion", {}))
        self.masks.load_state_dict(state.get("masks", {}))
        if self.masks.masks:  # pruning had started
            self._apply()

