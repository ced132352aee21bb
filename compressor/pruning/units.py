"""What one pruning granularity prunes: its units, their scores, masks, measured zeros and
compaction, behind one small interface (:class:`PruningUnits`).

A *unit* is what sparsity is measured over and what allocation hands a ratio to: one layer's
weight (``unstructured``, ``n:m``), one group of coupled channels or heads (``channel``,
``head``), or the set of removable residual blocks (``block``). Removal decisions are one flat
boolean tensor per unit (``True`` = removed); everything else (masks, channel selections,
measured sparsity) is derived from them. A new granularity is one subclass registered in
:data:`UNITS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.graph.atoms import ChannelSelection
from compressor.graph.blocks import ResidualBlock, find_residual_blocks
from compressor.graph.dependency import ChannelGroup, DependencyGraph
from compressor.graph.masking import MaskedNorms
from compressor.graph.surgery import CompactionResult, CompactionStep, apply_step, compact_selection
from compressor.pruning.config import Granularity, PruningConfig
from compressor.pruning.report import prunable_weights
from compressor.utils.names import check_patterns, matching

__all__ = ["PruningUnits", "LayerUnits", "NMUnits", "GroupUnits", "BlockUnits", "UNITS",
           "make_units"]

Removed = dict[str, torch.Tensor]
ElementScores = Callable[[str], torch.Tensor]


class PruningUnits:
    """The units of one granularity on one model (subclasses fill :attr:`names`).

    Attributes:
        names: The unit names, in a stable order (they key checkpoints).
        keep_at_least: Items each unit keeps whatever the sparsity (1 for channel groups).
        normalise_scores: Whether global allocation divides scores by their unit's mean.
    """

    keep_at_least: ClassVar[int] = 0
    normalise_scores: ClassVar[bool] = False
    description: ClassVar[str] = "no convolution or linear layer to prune"

    def __init__(self) -> None:
        self.names: list[str] = []

    def modules_of(self, unit: str) -> list[str]:
        """Module names a unit belongs to (what ``overrides`` patterns are matched against)."""
        raise NotImplementedError

    def size(self, unit: str, parameters: dict[str, torch.Tensor]) -> int:
        """Number of removable items in ``unit``."""
        raise NotImplementedError

    def scored_parameters(self, parameters: dict[str, torch.Tensor]) -> list[str]:
        """Parameters whose gradients a gradient-based criterion must record."""
        raise NotImplementedError

    def scores(self, unit: str, element_scores: ElementScores,
               parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """Importance of each item of ``unit`` from per-element parameter scores."""
        raise NotImplementedError

    def masks(self, model: nn.Module, removed: Removed) -> dict[str, torch.Tensor]:
        """Keep-masks per parameter name for the removal decisions."""
        raise NotImplementedError

    def measured_zero(self, parameters: dict[str, torch.Tensor]) -> Removed:
        """Per unit, which items are entirely zero in the model's actual weights."""
        raise NotImplementedError

    def selection(self, removed: Removed) -> ChannelSelection:
        """Removed channels as group index -> channel indices (empty unless channel groups)."""
        return {}

    def masks_applied(self, model: nn.Module, removed: Removed) -> None:
        """Called after masks were applied (e.g. to renormalise masked norms)."""

    def release(self) -> None:
        """Remove anything :meth:`masks_applied` installed on the model."""

    def compact(self, model: nn.Module, removed: Removed) -> CompactionResult:
        """Physically remove what is removed (in place)."""
        raise ConfigError("this granularity keeps tensor shapes; only channel, head and block "
                          "pruning can be compacted.")

    def hint(self, config: PruningConfig) -> str:
        """Why nothing may be prunable, for the error message."""
        if config.protect_first_last:
            return " (the first and last layers are protected; set protect_first_last=False)"
        return ""


class LayerUnits(PruningUnits):
    """One unit per conv/linear weight; items are its elements (``unstructured``)."""

    def __init__(self, reference: nn.Module, config: PruningConfig, example_inputs: Any = None) -> None:
        super().__init__()
        weights = prunable_weights(reference)
        names = list(weights)
        modules = [name.rpartition(".")[0] for name in names]
        check_patterns("ignore", config.ignore, modules)
        ignored = matching(config.ignore, modules)
        if config.protect_first_last:
            names = names[1:-1]
        self.names = [n for n in names if n.rpartition(".")[0] not in ignored]
        self._weights = weights

    def modules_of(self, unit: str) -> list[str]:
        return [unit.rpartition(".")[0]]

    def size(self, unit: str, parameters: dict[str, torch.Tensor]) -> int:
        return parameters[unit].numel()

    def scored_parameters(self, parameters: dict[str, torch.Tensor]) -> list[str]:
        return list(self.names)

    def scores(self, unit: str, element_scores: ElementScores,
               parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return element_scores(unit)

    def masks(self, model: nn.Module, removed: Removed) -> dict[str, torch.Tensor]:
        parameters = dict(model.named_parameters())
        return {u: (~r).view(parameters[u].shape) for u, r in removed.items()}

    def measured_zero(self, parameters: dict[str, torch.Tensor]) -> Removed:
        return {unit: (parameters[unit] == 0).flatten().cpu() for unit in self.names}


class NMUnits(LayerUnits):
    """``n:m``: layers whose input width is a multiple of ``m`` (the others stay dense, with a
    warning); allocation is fixed by the pattern (see :class:`~compressor.pruning.allocation.NMPattern`)."""

    def __init__(self, reference: nn.Module, config: PruningConfig, example_inputs: Any = None) -> None:
        super().__init__(reference, config)
        skipped = [n for n in self.names if _input_width(self._weights[n]) % config.m]
        if skipped:
            warnings.warn(f"{len(skipped)} layer(s) have an input width that is not a multiple "
                          f"of m={config.m} and stay dense: {', '.join(skipped)}", stacklevel=4)
        self.names = [n for n in self.names if n not in skipped]


class GroupUnits(PruningUnits):
    """One unit per group of coupled channels (``channel``) or heads (``head``) of the
    dependency graph; items are its channels or heads."""

    keep_at_least = 1
    normalise_scores = True

    def __init__(self, reference: nn.Module, config: PruningConfig, example_inputs: Any) -> None:
        super().__init__()
        self.kind = "head" if config.granularity is Granularity.HEAD else "channel"
        self.description = ("no multi-head attention whose heads can be removed"
                            if self.kind == "head" else "no removable channel group")
        self.graph = DependencyGraph(reference, example_inputs)
        groups = [g for g in self.graph.groups_of_kind(self.kind) if len(g) > 1]
        modules = sorted({m for g in self.graph.groups for m in g.modules})
        check_patterns("ignore", config.ignore, modules)
        ignored = matching(config.ignore, modules)
        self.groups = {f"{self.kind}:{g.index}": g for g in groups if not ignored & set(g.modules)}
        self.names = list(self.groups)
        self._slots = {unit: _slot_index(group) for unit, group in self.groups.items()}
        self._norm_hooks: MaskedNorms | None = None

    def modules_of(self, unit: str) -> list[str]:
        return list(self.groups[unit].producers or self.groups[unit].modules)

    def size(self, unit: str, parameters: dict[str, torch.Tensor]) -> int:
        return len(self.groups[unit])

    def scored_parameters(self, parameters: dict[str, torch.Tensor]) -> list[str]:
        names = {slot.tensor for group in self.groups.values() for slot in group.slots}
        return sorted(names & set(parameters))

    def scores(self, unit: str, element_scores: ElementScores,
               parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = torch.zeros(len(self.groups[unit]))
        for slot, (owners, positions) in self._slots[unit].items():
            if slot.tensor not in parameters:
                continue
            element = element_scores(slot.tensor)
            dims = [d for d in range(element.ndim) if d != slot.dim]
            per_position = element.sum(dim=dims) if dims else element
            scores.index_add_(0, owners, per_position.cpu()[positions])
        return scores

    def selection(self, removed: Removed) -> ChannelSelection:
        return {self.groups[u].index: torch.nonzero(r).flatten().tolist()
                for u, r in removed.items() if r.any()}

    def masks(self, model: nn.Module, removed: Removed) -> dict[str, torch.Tensor]:
        parameters = dict(model.named_parameters())
        masks = self.graph.masks(model, self.selection(removed))
        return {name: mask for name, mask in masks.items() if name in parameters}

    def measured_zero(self, parameters: dict[str, torch.Tensor]) -> Removed:
        return {unit: self._zero_items(unit, parameters) for unit in self.names}

    def _zero_items(self, unit: str, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        nonzero = torch.zeros(len(self.groups[unit]))
        for slot, (owners, positions) in self._slots[unit].items():
            if slot.tensor not in parameters:
                continue
            tensor = parameters[slot.tensor] != 0
            dims = [d for d in range(tensor.ndim) if d != slot.dim]
            per_position = (tensor.any(dim=dims) if dims else tensor).float().cpu()
            nonzero.index_add_(0, owners, per_position[positions])
        return nonzero == 0

    def masks_applied(self, model: nn.Module, removed: Removed) -> None:
        self.release()
        self._norm_hooks = MaskedNorms(model, self.graph, self.selection(removed))

    def release(self) -> None:
        if self._norm_hooks is not None:
            self._norm_hooks.remove()
            self._norm_hooks = None

    def compact(self, model: nn.Module, removed: Removed) -> CompactionResult:
        return compact_selection(model, self.graph, self.selection(removed))

    def hint(self, config: PruningConfig) -> str:
        return " " + self.graph.exclusion_summary() if self.graph.unexpected_exclusions else ""


class BlockUnits(PruningUnits):
    """One unit (``"blocks"``) whose items are the residual blocks that can be removed exactly."""

    description = "no residual block that can be removed"

    def __init__(self, reference: nn.Module, config: PruningConfig, example_inputs: Any) -> None:
        super().__init__()
        blocks = find_residual_blocks(reference, example_inputs)
        paths = [block.path for block in blocks]
        check_patterns("ignore", config.ignore, paths or [""])
        ignored = matching(config.ignore, paths)
        self.blocks: list[ResidualBlock] = [b for b in blocks if b.path not in ignored]
        self.names = ["blocks"] if self.blocks else []

    def modules_of(self, unit: str) -> list[str]:
        return [block.path for block in self.blocks]

    def size(self, unit: str, parameters: dict[str, torch.Tensor]) -> int:
        return len(self.blocks)

    def scored_parameters(self, parameters: dict[str, torch.Tensor]) -> list[str]:
        return [p for block in self.blocks for p in block.parameters]

    def scores(self, unit: str, element_scores: ElementScores,
               parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        means = []
        for block in self.blocks:
            values = [element_scores(p).flatten() for p in block.parameters]
            means.append(float(torch.cat(values).mean()) if values else 0.0)
        return torch.tensor(means)

    def masks(self, model: nn.Module, removed: Removed) -> dict[str, torch.Tensor]:
        parameters = dict(model.named_parameters())
        masks: dict[str, torch.Tensor] = {}
        for block, gone in zip(self.blocks, removed["blocks"].tolist()):
            if gone:
                for name in block.branch_ends:
                    masks[name] = torch.zeros_like(parameters[name], dtype=torch.bool)
        return masks

    def measured_zero(self, parameters: dict[str, torch.Tensor]) -> Removed:
        return {"blocks": torch.tensor([all(bool((parameters[n] == 0).all())
                                            for n in block.branch_ends)
                                        for block in self.blocks])}

    def compact(self, model: nn.Module, removed: Removed) -> CompactionResult:
        paths = [b.path for b, gone in zip(self.blocks, removed["blocks"].tolist()) if gone]
        return apply_step(model, CompactionStep(identity=paths))

    def hint(self, config: PruningConfig) -> str:
        return ""


UNITS: dict[Granularity, type[PruningUnits]] = {
    Granularity.UNSTRUCTURED: LayerUnits,
    Granularity.NM: NMUnits,
    Granularity.CHANNEL: GroupUnits,
    Granularity.HEAD: GroupUnits,
    Granularity.BLOCK: BlockUnits,
}


def make_units(reference: nn.Module, config: PruningConfig, example_inputs: Any) -> PruningUnits:
    """The units of ``config.granularity`` on ``reference``.

    Raises:
        ConfigError: a structured granularity without ``example_inputs`` (it traces the model).
    """
    granularity = Granularity(config.granularity)
    if granularity.structured and example_inputs is None:
        raise ConfigError(f"granularity {granularity.value!r} traces the model: pass "
                          "`example_inputs` (e.g. one batch of inputs).")
    return UNITS[granularity](reference, config, example_inputs)


def _input_width(weight: torch.Tensor) -> int:
    return weight.shape[1] if weight.ndim > 1 else weight.shape[0]


def _slot_index(group: ChannelGroup) -> dict[Any, tuple[torch.Tensor, torch.Tensor]]:
    """Per slot of a group: (channel index, position) pairs as two flat index tensors."""
    pairs: dict[Any, tuple[list[int], list[int]]] = {}
    for index, channel in enumerate(group.channels):
        for slot, positions in channel.slices.items():
            owners, places = pairs.setdefault(slot, ([], []))
            owners.extend([index] * len(positions))
            places.extend(positions)
    return {slot: (torch.tensor(o), torch.tensor(p)) for slot, (o, p) in pairs.items()}
