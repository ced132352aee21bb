"""``Pruner``: the library object behind the ``Pruning`` callback (no Lightning needed).

::

    pruner = Pruner(model, PruningConfig("channel", sparsity=0.5, criterion="taylor"), inputs)
    schedule = make_schedule("cubic", 0.5, start=0, end=1000, frequency=100)
    pruner.attach(optimizer)                      # masks stay enforced from now on
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        loss.backward()
        pruner.accumulate()                       # gradient-based criteria only
        optimizer.step(); optimizer.zero_grad()
        if schedule.is_event(step):
            pruner.update(schedule(step))
    pruner.compact()                              # channel/head/block: physically smaller
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.graph.blocks import ResidualBlock, find_residual_blocks
from compressor.graph.dependency import ChannelGroup, DependencyGraph
from compressor.graph.masking import MaskedNorms
from compressor.graph.surgery import CompactionResult, CompactionStep, apply_step, compact_selection
from compressor.pruning.allocation import (
    check_patterns,
    matching,
    select_global,
    select_uniform,
    unit_sparsities,
)
from compressor.pruning.config import Allocation, Granularity, PruningConfig
from compressor.pruning.criteria import Criterion, make_criterion
from compressor.pruning.masks import MaskSet
from compressor.pruning.report import prunable_weights
from compressor.utils.modes import refresh_mode_state

__all__ = ["Pruner", "PruningStatus"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)  # noqa: SLF001


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


class Pruner:
    """Computes and enforces pruning masks on ``model`` for one :class:`PruningConfig`.

    Args:
        model: The model to prune (masks are applied in place).
        config: What to prune.
        example_inputs: Inputs for one forward pass; required for ``channel``, ``head`` and
            ``block`` granularity (to trace the model).
        reference: A module with the same parameter names whose layer types identify the
            prunable weights, when ``model`` no longer has them (e.g. a QAT-prepared graph of
            the same network). Defaults to ``model``.

    Raises:
        ConfigError: nothing prunable, or an ``overrides`` / ``ignore`` pattern that matches
            no layer.
    """

    def __init__(self, model: nn.Module, config: PruningConfig, example_inputs: Any = None,
                 reference: nn.Module | None = None) -> None:
        self.model = model
        self.reference = reference if reference is not None else model
        self.config = config
        self.granularity: Granularity = config.granularity  # type: ignore[assignment]
        self.masks = MaskSet()
        self.graph: DependencyGraph | None = None
        self.blocks: list[ResidualBlock] = []
        self.removed: dict[str, torch.Tensor] = {}
        self.compacted = False
        self._norm_hooks: MaskedNorms | None = None
        norm_weights = {f"{n}.weight" if n else "weight" for n, m in
                        self.reference.named_modules() if isinstance(m, _NORMS)}
        self.criterion: Criterion = make_criterion(config.criterion, config.seed, norm_weights)
        if self.granularity.structured and example_inputs is None:
            raise ConfigError(f"granularity {self.granularity.value!r} traces the model: pass "
                              "`example_inputs` (e.g. one batch of inputs).")
        if self.granularity in (Granularity.CHANNEL, Granularity.HEAD):
            self.graph = DependencyGraph(self.reference, example_inputs)
            self.units = self._group_units()
        elif self.granularity is Granularity.BLOCK:
            self.blocks = find_residual_blocks(self.reference, example_inputs)
            self.units = self._block_units()
        else:
            self.units = self._layer_units()
        if not self.units:
            raise ConfigError(self._nothing_to_prune())
        self.unit_modules = {unit: self._modules_of(unit) for unit in self.units}
        all_modules = sorted({m for ms in self.unit_modules.values() for m in ms})
        check_patterns("overrides", config.overrides, all_modules)
        self.sparsities = unit_sparsities(self.unit_modules, config.target, config.overrides)
        self.removed = {unit: torch.zeros(self._unit_size(unit), dtype=torch.bool)
                        for unit in self.units}

    # ------------------------------------------------------------------ units
    def _layer_units(self) -> list[str]:
        weights = prunable_weights(self.reference)
        names = list(weights)
        modules = [name.rpartition(".")[0] for name in names]
        check_patterns("ignore", self.config.ignore, modules)
        ignored = matching(self.config.ignore, modules)
        if self.config.protect_first_last:
            names = names[1:-1]
        units = [n for n in names if n.rpartition(".")[0] not in ignored]
        if self.granularity is Granularity.NM:
            skipped = [n for n in units if _input_width(weights[n]) % self.config.m]
            if skipped:
                warnings.warn(f"{len(skipped)} layer(s) have an input width that is not a multiple "
                              f"of m={self.config.m} and stay dense: {', '.join(skipped)}",
                              stacklevel=3)
            units = [n for n in units if n not in skipped]
        return units

    def _group_units(self) -> list[str]:
        assert self.graph is not None
        kind = "head" if self.granularity is Granularity.HEAD else "channel"
        groups = [g for g in self.graph.groups_of_kind(kind) if len(g) > 1]
        modules = sorted({m for g in self.graph.groups for m in g.modules})
        check_patterns("ignore", self.config.ignore, modules)
        ignored = matching(self.config.ignore, modules)
        self._groups = {f"{kind}:{g.index}": g for g in groups if not ignored & set(g.modules)}
        return list(self._groups)

    def _block_units(self) -> list[str]:
        paths = [block.path for block in self.blocks]
        check_patterns("ignore", self.config.ignore, paths or [""])
        ignored = matching(self.config.ignore, paths)
        self.blocks = [b for b in self.blocks if b.path not in ignored]
        return ["blocks"] if self.blocks else []

    def _modules_of(self, unit: str) -> list[str]:
        if self.granularity in (Granularity.CHANNEL, Granularity.HEAD):
            return list(self._groups[unit].producers or self._groups[unit].modules)
        if self.granularity is Granularity.BLOCK:
            return [block.path for block in self.blocks]
        return [unit.rpartition(".")[0]]

    def _unit_size(self, unit: str) -> int:
        if self.granularity in (Granularity.CHANNEL, Granularity.HEAD):
            return len(self._groups[unit])
        if self.granularity is Granularity.BLOCK:
            return len(self.blocks)
        return self._parameter(unit).numel()

    def _nothing_to_prune(self) -> str:
        what = {Granularity.CHANNEL: "no removable channel group",
                Granularity.HEAD: "no multi-head attention whose heads can be removed",
                Granularity.BLOCK: "no residual block that can be removed",
                }.get(self.granularity, "no convolution or linear layer to prune")
        hint = ""
        if self.graph is not None and self.graph.unexpected_exclusions:
            hint = " " + self.graph.exclusion_summary()
        elif self.config.protect_first_last and not self.granularity.structured:
            hint = " (the first and last layers are protected; set protect_first_last=False)"
        return f"Nothing to prune in {type(self.model).__name__}: {what}.{hint}"

    def _parameter(self, name: str) -> torch.Tensor:
        return dict(self.model.named_parameters())[name]

    # ----------------------------------------------------------------- scoring
    @property
    def has_gradient_scores(self) -> bool:
        """Whether a gradient-based criterion has accumulated statistics."""
        return bool(getattr(self.criterion, "count", 0))

    def rebind(self, model: nn.Module) -> None:
        """Follow a replacement of the model by an equivalent module with the same parameter
        names (e.g. after another callback swapped it); masks are re-applied."""
        names = set(dict(model.named_parameters()))
        missing = [name for name in self.masks.masks if name not in names]
        if missing:
            raise ConfigError(f"The pruned model was replaced by a module without the masked "
                              f"parameters {missing[:3]}; masks cannot follow. Finish pruning "
                              "before another callback replaces the model.")
        self.detach()
        self.model = model
        if self.masks.masks:
            self.masks.apply(model)

    def accumulate(self) -> None:
        """Record gradient statistics (call after ``backward``; no-op for magnitude criteria)."""
        if self.criterion.needs_gradients and not self.compacted:
            parameters = dict(self.model.named_parameters())
            self.criterion.accumulate({n: parameters[n] for n in self._scored_parameters()
                                       if n in parameters})

    def _scored_parameters(self) -> list[str]:
        if self.granularity in (Granularity.UNSTRUCTURED, Granularity.NM):
            return list(self.units)
        if self.granularity is Granularity.BLOCK:
            return [p for block in self.blocks for p in block.parameters]
        names = {slot.tensor for group in self._groups.values() for slot in group.slots}
        return sorted(names & set(dict(self.model.named_parameters())))

    def _element_scores(self, name: str) -> torch.Tensor:
        return self.criterion.scores(name, self._parameter(name)).float()

    def _group_scores(self, group: ChannelGroup) -> torch.Tensor:
        parameters = dict(self.model.named_parameters())
        scores = torch.zeros(len(group))
        for slot, (owners, positions) in _slot_index(group).items():
            if slot.tensor not in parameters:
                continue
            element = self._element_scores(slot.tensor)
            dims = [d for d in range(element.ndim) if d != slot.dim]
            per_position = element.sum(dim=dims) if dims else element
            scores.index_add_(0, owners, per_position.cpu()[positions])
        return scores

    def _block_scores(self) -> torch.Tensor:
        means = []
        for block in self.blocks:
            values = [self._element_scores(p).flatten() for p in block.parameters]
            means.append(float(torch.cat(values).mean()) if values else 0.0)
        return torch.tensor(means)

    # ------------------------------------------------------------------ update
    def update(self, sparsity: float | None = None) -> PruningStatus:
        """Compute masks for ``sparsity`` (default: the config's target, overrides applied
        proportionally) and apply them. Masks only grow: removed items stay removed."""
        if self.compacted:
            raise ConfigError("This model was already compacted; create a new Pruner to prune "
                              "it further.")
        target = self.config.target if sparsity is None else float(sparsity)
        scale = target / self.config.target if self.config.target else 0.0
        if target > 0:
            if self.granularity is Granularity.NM:
                self._update_nm()
            elif self.granularity is Granularity.BLOCK:
                self._update_blocks(target)
            elif self.config.allocation is Allocation.GLOBAL:
                self._update_global(target, scale)
            else:
                self._update_uniform(scale)
            self._apply()
        return self.status(target)

    def _scores_of(self, unit: str) -> torch.Tensor:
        if self.granularity in (Granularity.CHANNEL, Granularity.HEAD):
            return self._group_scores(self._groups[unit])
        return self._element_scores(unit)

    def _keep_at_least(self) -> int:
        return 1 if self.granularity in (Granularity.CHANNEL, Granularity.HEAD) else 0

    def _update_uniform(self, scale: float) -> None:
        for unit in self.units:
            scores = self._scores_of(unit)
            self.removed[unit] = select_uniform(scores, self.removed[unit].view(scores.shape),
                                                self.sparsities[unit] * scale,
                                                self._keep_at_least()).flatten()

    def _update_global(self, target: float, scale: float) -> None:
        overridden = {u for u in self.units
                      if matching(self.config.overrides, self.unit_modules[u])}
        pooled = [u for u in self.units if u not in overridden]
        others = [u for u in self.units if u in overridden]
        if pooled:
            scores = [self._scores_of(u) for u in pooled]
            removed = [self.removed[u].view(s.shape) for u, s in zip(pooled, scores)]
            normalise = self.granularity in (Granularity.CHANNEL, Granularity.HEAD)
            chosen = select_global(scores, removed, target, self._keep_at_least(), normalise)
            for unit, mask in zip(pooled, chosen):
                self.removed[unit] = mask.flatten()
        for unit in others:
            scores = self._scores_of(unit)
            self.removed[unit] = select_uniform(scores, self.removed[unit].view(scores.shape),
                                                self.sparsities[unit] * scale,
                                                self._keep_at_least()).flatten()

    def _update_nm(self) -> None:
        n, m = self.config.n, self.config.m
        for unit in self.units:
            scores = self._element_scores(unit)
            grouped = _to_input_last(scores).reshape(-1, m)
            keep = torch.zeros_like(grouped, dtype=torch.bool)
            keep.scatter_(1, torch.topk(grouped, n, dim=1).indices, True)
            self.removed[unit] = (~_from_input_last(keep.reshape(_to_input_last(scores).shape),
                                                    scores.shape)).flatten()

    def _update_blocks(self, target: float) -> None:
        scores = self._block_scores()
        self.removed["blocks"] = select_uniform(scores, self.removed["blocks"], target,
                                                keep_at_least=0)

    # ------------------------------------------------------------------- masks
    def selection(self) -> dict[int, list[int]]:
        """Removed channels as group index -> channel indices (channel/head granularity)."""
        if self.graph is None:
            return {}
        return {self._groups[u].index: torch.nonzero(r).flatten().tolist()
                for u, r in self.removed.items() if r.any()}

    def _mask_tensors(self) -> dict[str, torch.Tensor]:
        parameters = dict(self.model.named_parameters())
        if self.granularity in (Granularity.UNSTRUCTURED, Granularity.NM):
            return {u: (~r).view(parameters[u].shape) for u, r in self.removed.items()}
        if self.granularity is Granularity.BLOCK:
            masks: dict[str, torch.Tensor] = {}
            for block, removed in zip(self.blocks, self.removed["blocks"].tolist()):
                if removed:
                    for name in block.branch_ends:
                        masks[name] = torch.zeros_like(parameters[name], dtype=torch.bool)
            return masks
        assert self.graph is not None
        masks = self.graph.masks(self.model, self.selection())
        return {name: mask for name, mask in masks.items() if name in parameters}

    def _apply(self) -> None:
        self.masks.update(self._mask_tensors())
        self.masks.apply(self.model)
        refresh_mode_state(self.model)
        if self.graph is not None:
            if self._norm_hooks is not None:
                self._norm_hooks.remove()
            self._norm_hooks = MaskedNorms(self.model, self.graph, self.selection())

    def attach(self, optimizers: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] = ()) -> None:
        """Keep masked entries at zero through training with ``optimizers``."""
        if isinstance(optimizers, torch.optim.Optimizer):
            optimizers = [optimizers]
        self.masks.attach(self.model, optimizers)

    def detach(self) -> None:
        """Stop enforcing the masks and remove the masked-norm hooks."""
        self.masks.detach()
        if self._norm_hooks is not None:
            self._norm_hooks.remove()
            self._norm_hooks = None

    # ------------------------------------------------------------------ status
    def status(self, target: float | None = None) -> PruningStatus:
        """Sparsity measured from the model's actual zeros: per layer (unstructured, n:m), per
        group (a channel or head counts when all its parameter slices are zero) or over blocks
        (a block counts when its residual branches are zeroed); plus the fraction of zeros over
        all conv/linear weights."""
        zero = self._measured_zero()
        per_unit = {unit: float(flags.float().mean()) for unit, flags in zero.items()}
        total = sum(flags.numel() for flags in zero.values())
        measured = sum(int(flags.sum()) for flags in zero.values()) / total if total else 0.0
        parameters = dict(self.model.named_parameters())
        weights = [parameters[name] for name in prunable_weights(self.reference)
                   if name in parameters]
        numel = sum(w.numel() for w in weights)
        zeros = sum(int((w == 0).sum()) for w in weights)
        return PruningStatus(self.config.target if target is None else target, measured,
                             zeros / numel if numel else 0.0, per_unit)

    def _measured_zero(self) -> dict[str, torch.Tensor]:
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            if self.granularity in (Granularity.UNSTRUCTURED, Granularity.NM):
                return {unit: (parameters[unit] == 0).flatten().cpu() for unit in self.units}
            if self.granularity is Granularity.BLOCK:
                return {"blocks": torch.tensor([all(bool((parameters[n] == 0).all())
                                                    for n in block.branch_ends)
                                                for block in self.blocks])}
            return {unit: self._zero_channels(self._groups[unit], parameters)
                    for unit in self.units}

    @staticmethod
    def _zero_channels(group: ChannelGroup, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        nonzero = torch.zeros(len(group))
        for slot, (owners, positions) in _slot_index(group).items():
            if slot.tensor not in parameters:
                continue
            tensor = parameters[slot.tensor] != 0
            dims = [d for d in range(tensor.ndim) if d != slot.dim]
            per_position = (tensor.any(dim=dims) if dims else tensor).float().cpu()
            nonzero.index_add_(0, owners, per_position[positions])
        return nonzero == 0

    # ----------------------------------------------------------------- compact
    def compact(self) -> CompactionResult:
        """Physically remove the pruned channels, heads or blocks (in place)."""
        if not self.granularity.structured:
            raise ConfigError(f"granularity {self.granularity.value!r} keeps tensor shapes; only "
                              "channel, head and block pruning can be compacted.")
        self.detach()
        if self.granularity is Granularity.BLOCK:
            result = self._compact_blocks()
        else:
            assert self.graph is not None
            result = compact_selection(self.model, self.graph, self.selection())
        self.masks.clear()
        self.compacted = True
        return result

    def _compact_blocks(self) -> CompactionResult:
        paths = [b.path for b, r in zip(self.blocks, self.removed["blocks"].tolist()) if r]
        return apply_step(self.model, CompactionStep(identity=paths))

    # ------------------------------------------------------------------- state
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
        if self.masks.masks:
            self._apply()


def _input_width(weight: torch.Tensor) -> int:
    return weight.shape[1] if weight.ndim > 1 else weight.shape[0]


def _to_input_last(tensor: torch.Tensor) -> torch.Tensor:
    """``(O, I, *k)`` -> ``(O, *k, I)`` so groups of M run along the input dimension."""
    return tensor.movedim(1, -1) if tensor.ndim > 2 else tensor


def _from_input_last(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return tensor.movedim(-1, 1).reshape(shape) if len(shape) > 2 else tensor.reshape(shape)


def _slot_index(group: ChannelGroup) -> dict[Any, tuple[torch.Tensor, torch.Tensor]]:
    """Per slot of a group: (channel index, position) pairs as two flat index tensors."""
    cached = getattr(group, "_slot_index", None)
    if cached is None:
        pairs: dict[Any, tuple[list[int], list[int]]] = {}
        for index, channel in enumerate(group.channels):
            for slot, positions in channel.slices.items():
                owners, places = pairs.setdefault(slot, ([], []))
                owners.extend([index] * len(positions))
                places.extend(positions)
        cached = {slot: (torch.tensor(o), torch.tensor(p)) for slot, (o, p) in pairs.items()}
        object.__setattr__(group, "_slot_index", cached)
    return cached
