"""``DependencyGraph``: the groups of coupled channels of a model, found by tracing it.

A *channel* is everything that must be removed together: e.g. output channel 5 of a convolution,
entry 5 of the batch norm after it, input channel 5 of every layer that reads it and, across a
residual add, channel 5 of every branch. A *group* collects the channels that touch the same
tensors (one residual stage, one conv-BN-conv chain, one attention layer's heads), so that
importance scores and sparsity targets apply per group.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.graph.atoms import ChannelSelection, Slot
from compressor.graph.handlers import handler_for
from compressor.graph.labels import canonical
from compressor.graph.propagate import OUTPUT_REASON, NormUse, Propagation, SizeAttribute, propagate
from compressor.graph.rules.common import size_attributes
from compressor.graph.surgery import trial_difference
from compressor.graph.trace import as_args, trace_model

__all__ = ["Channel", "ChannelGroup", "Exclusion", "DependencyGraph", "ChannelSelection"]



@dataclass(frozen=True)
class Channel:
    """One removable channel: for each ``(tensor, dim)`` slot, the indices it occupies."""

    slices: dict[Slot, tuple[int, ...]]
    atoms: frozenset[int] = frozenset()


@dataclass
class ChannelGroup:
    """Channels that touch the same tensors.

    Attributes:
        index: Position in ``DependencyGraph.groups``.
        kind: ``"channel"`` or ``"head"`` (whole attention heads).
        channels: The removable channels.
        slots: Every ``(tensor, dim)`` the channels occupy.
        modules: Qualified names of the modules owning those tensors, in graph order.
    """

    index: int
    kind: str
    channels: list[Channel]
    slots: tuple[Slot, ...]
    modules: tuple[str, ...]
    producers: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """A readable name: the first module that produces these channels."""
        return (self.producers or self.modules or ("?",))[0]

    def __len__(self) -> int:
        return len(self.channels)

    def __repr__(self) -> str:
        return (f"ChannelGroup({self.index}, {self.kind}, {len(self.channels)} channels, "
                f"modules={list(self.modules)})")


@dataclass(frozen=True)
class Exclusion:
    """Channels that cannot be removed, with the module and the reason."""

    modules: tuple[str, ...]
    reason: str
    channels: int


@dataclass
class _Plan:
    """Which indices to remove from each ``(tensor, dim)``."""

    removed: dict[tuple[str, int], set[int]] = field(default_factory=lambda: defaultdict(set))

    def add(self, channel: Channel) -> None:
        for slot, indices in channel.slices.items():
            self.removed[(slot.tensor, slot.dim)].update(indices)


class DependencyGraph:
    """Coupled channel groups of ``model``, found by tracing it on ``example_inputs``.

    Args:
        model: The model (not modified; traced in eval mode).
        example_inputs: A tensor or tuple of positional arguments for one forward pass.
        validate: Check every group by removing one of its channels on a copy of the model and
            comparing outputs; groups that fail are excluded with a warning.
        warn: Emit a warning listing excluded channels and the reasons.

    Raises:
        CaptureError: the model cannot be traced by ``torch.export``.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, *, validate: bool = True,
                 warn: bool = True) -> None:
        self.example_inputs = as_args(example_inputs)
        traced = trace_model(model, self.example_inputs)
        self._propagation: Propagation = propagate(traced, model)
        self._order = _tensor_order(traced)
        self.groups: list[ChannelGroup] = []
        self.excluded: list[Exclusion] = []
        # Width attributes of modules without a handler, updated with the slot they describe.
        self.width_attributes: dict[Slot, list[tuple[str, str]]] = {}
        self._build(model)
        if validate:
            self._validate(model)
        if warn and self.unexpected_exclusions:
            warnings.warn(self.exclusion_summary(), stacklevel=2)

    # --------------------------------------------------------------- queries
    @property
    def norms(self) -> list[NormUse]:
        """LayerNorm-style modules normalising over removable channels."""
        return self._propagation.norms

    @property
    def size_attributes(self) -> list[SizeAttribute]:
        """Module attributes that hold a size the graph depends on (head counts, widths used in
        reshapes, split sizes); compaction updates them."""
        return self._propagation.size_attributes

    def groups_of_kind(self, kind: str) -> list[ChannelGroup]:
        """Groups of channels (``"channel"``) or of attention heads (``"head"``)."""
        return [group for group in self.groups if group.kind == kind]

    @property
    def unexpected_exclusions(self) -> list[Exclusion]:
        """Exclusions other than the model's own outputs (which can never be removed)."""
        return [e for e in self.excluded if not e.reason.endswith(OUTPUT_REASON)]

    def exclusion_summary(self) -> str:
        """One line per unexpectedly excluded set of channels: modules and reason."""
        unexpected = self.unexpected_exclusions
        lines = [f"{len(unexpected)} set(s) of channels cannot be removed and are excluded "
                 "from structured pruning:"]
        for exclusion in unexpected:
            modules = ", ".join(f"`{m}`" for m in exclusion.modules[:4])
            more = f" (+{len(exclusion.modules) - 4} more)" if len(exclusion.modules) > 4 else ""
            lines.append(f"  - {exclusion.channels} channel(s) of {modules}{more}: {exclusion.reason}")
        return "\n".join(lines)

    def plan(self, selection: ChannelSelection) -> dict[tuple[str, int], list[int]]:
        """Indices to remove per ``(tensor, dim)`` for ``selection`` (group index -> channel
        indices within the group)."""
        plan = _Plan()
        for group_index, channels in selection.items():
            group = self.groups[group_index]
            for channel in channels:
                plan.add(group.channels[channel])
        return {key: sorted(indices) for key, indices in plan.removed.items() if indices}

    def masks(self, model: nn.Module, selection: ChannelSelection) -> dict[str, torch.Tensor]:
        """Boolean keep-masks (``False`` = removed) for every tensor ``selection`` touches."""
        masks: dict[str, torch.Tensor] = {}
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        for (name, dim), indices in self.plan(selection).items():
            if name not in tensors:
                continue
            mask = masks.setdefault(name, torch.ones_like(tensors[name], dtype=torch.bool))
            index = [slice(None)] * mask.ndim
            index[dim] = torch.tensor(indices, dtype=torch.long)
            mask[tuple(index)] = False
        return masks

    def removed_atoms(self, selection: ChannelSelection) -> set[int]:
        """Atom ids of the selected channels (used for norm and head bookkeeping)."""
        atoms: set[int] = set()
        for group_index, channels in selection.items():
            for channel in channels:
                atoms |= self.groups[group_index].channels[channel].atoms
        return atoms

    def kept_positions(self, labels: np.ndarray, removed: set[int], dim: int) -> list[int]:
        """Indices along ``dim`` of a recorded label array that survive removing ``removed``."""
        uf = self._propagation.union_find
        removed_roots = {uf.find(a) for a in removed}
        rows = np.moveaxis(labels, dim, 0).reshape(labels.shape[dim], -1)
        return [i for i, row in enumerate(rows)
                if not all(a >= 0 and uf.find(int(a)) in removed_roots for a in row)]

    # ----------------------------------------------------------------- build
    def _build(self, model: nn.Module) -> None:
        prop = self._propagation
        uf = prop.union_find
        self._apply_hyperplane_constraints()
        size = prop.space.size
        roots = uf.roots(size)
        slots = prop.space.slots()
        positions, indices = prop.space.locate_many(np.arange(size, dtype=np.int64))
        is_producer = np.array([slot in prop.producers for slot in slots], dtype=bool)[positions]
        order = np.argsort(roots, kind="stable")
        boundaries = np.flatnonzero(np.diff(roots[order])) + 1
        candidates: dict[tuple[str, tuple[Slot, ...]], list[Channel]] = defaultdict(list)
        rejected: dict[tuple[tuple[str, ...], str], int] = defaultdict(int)
        for members in np.split(order, boundaries):
            if not is_producer[members].any():
                continue
            member_slots = [slots[p] for p in np.unique(positions[members])]
            reason = uf.poison.get(int(roots[members[0]]))
            channel = None
            if reason is None:
                channel, reason = self._channel(model, members, positions[members],
                                                indices[members], slots)
            if channel is None:
                owners = tuple(sorted({_owner(slot.tensor) for slot in member_slots},
                                      key=self._rank))
                rejected[(owners, reason or "unknown")] += 1
                continue
            kind = "head" if prop.head_atoms.intersection(members.tolist()) else "channel"
            candidates[(kind, tuple(sorted(channel.slices, key=self._slot_rank)))].append(channel)
        checker = _SupportChecker(model)
        for (kind, group_slots), channels in sorted(
                candidates.items(), key=lambda item: self._slot_rank(item[0][1][0])):
            modules = tuple(dict.fromkeys(_owner(s.tensor) for s in group_slots))
            problem = next(filter(None, (checker.problem(slot) for slot in group_slots)), None)
            if problem:
                rejected[(modules, problem)] += len(channels)
                continue
            if kind == "channel":  # head counts follow the recorded head splits instead
                for slot in group_slots:
                    if checker.widths(slot):
                        self.width_attributes[slot] = checker.widths(slot)
            channels.sort(key=lambda c: min(c.slices[group_slots[0]]))
            producers = tuple(_owner(s.tensor) for s in group_slots if s in prop.producers)
            self.groups.append(ChannelGroup(len(self.groups), kind, channels, group_slots,
                                            modules, producers))
        for (owners, reason), count in rejected.items():
            self.excluded.append(Exclusion(owners, reason, count))

    def _apply_hyperplane_constraints(self) -> None:
        """Channels that would delete a whole index along a dimension the model selects or
        unbinds with constant indices cannot be removed."""
        prop = self._propagation
        uf = prop.union_find
        for labels, dim, where in prop.whole_hyperplanes:
            canon = canonical(labels, uf)
            if canon.shape[dim] == 1:
                continue
            for row in np.moveaxis(canon, dim, 0).reshape(canon.shape[dim], -1):
                values = np.unique(row)
                if len(values) == 1 and values[0] >= 0:
                    uf.poison_atoms(values, f"{where}: indexes this dimension with constants")

    def _channel(self, model: nn.Module, atoms: np.ndarray, positions: np.ndarray,
                 indices: np.ndarray, slots: list[Slot]) -> tuple[Channel | None, str | None]:
        """The slices of one set of atoms, or why they cannot form a removable channel."""
        slices: dict[Slot, tuple[int, ...]] = {}
        for position in np.unique(positions):
            slot = slots[position]
            picked = indices[positions == position]
            if not slot.element:
                slices[slot] = tuple(sorted(set(picked.tolist())))
                continue
            resolved = _hyperplanes(_get(model, slot.tensor).shape, picked.tolist())
            if resolved is None:
                return None, (f"`{slot.tensor}` is used element-wise with these channels in a "
                              "way that cannot be sliced consistently")
            dim, hyperplanes = resolved
            target = Slot(slot.tensor, dim)
            slices[target] = tuple(sorted(set(slices.get(target, ())) | set(hyperplanes)))
        return Channel(slices, frozenset(atoms.tolist())), None

    def _rank(self, module: str) -> int:
        return self._order.get(module, len(self._order))

    def _slot_rank(self, slot: Slot) -> tuple[int, int, str]:
        return self._rank(_owner(slot.tensor)), slot.dim, slot.tensor

    # ------------------------------------------------------------- validation
    def _validate(self, model: nn.Module) -> None:
        """Remove one channel of every group on copies of the model and compare the outputs
        with the masked model; exclude groups whose removal is not exact."""
        candidates = [g for g in self.groups if len(g) > 1]
        if not candidates:
            return
        problem = trial_difference(model, self, {g.index: [0] for g in candidates})
        failing = []
        if problem is not None:
            for group in candidates:
                reason = trial_difference(model, self, {group.index: [0]})
                if reason is not None:
                    failing.append((group, reason))
        for group, reason in failing:
            self.excluded.append(Exclusion(group.modules, reason, len(group)))
        bad = {group.index for group, _ in failing}
        if bad:
            kept = [g for g in self.groups if g.index not in bad]
            for index, group in enumerate(kept):
                group.index = index
            self.groups = kept


def _owner(tensor: str) -> str:
    return tensor.rpartition(".")[0]


def _get(model: nn.Module, name: str) -> torch.Tensor:
    path, _, attribute = name.rpartition(".")
    return getattr(model.get_submodule(path) if path else model, attribute)


class _SupportChecker:
    """Whether the module owning a tensor can follow a slice of it (cached per slot).

    A module without a handler that stores the slot's size in an integer attribute named like a
    width (``embed_dim``, ``num_features``, ...) gets that attribute updated; any other integer
    attribute equal to the size makes the slot unsupported (it may be a width in disguise).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._cache: dict[Slot, tuple[str | None, list[tuple[str, str]]]] = {}

    def problem(self, slot: Slot) -> str | None:
        """Why the owner of ``slot`` cannot follow its slicing, or ``None``."""
        return self._checked(slot)[0]

    def widths(self, slot: Slot) -> list[tuple[str, str]]:
        """``(module, attribute)`` pairs holding the size of ``slot``, to update with it."""
        return self._checked(slot)[1]

    def _checked(self, slot: Slot) -> tuple[str | None, list[tuple[str, str]]]:
        if slot not in self._cache:
            self._cache[slot] = self._check(slot)
        return self._cache[slot]

    def _check(self, slot: Slot) -> tuple[str | None, list[tuple[str, str]]]:
        path = _owner(slot.tensor)
        module = self.model.get_submodule(path) if path else self.model
        if handler_for(module) is not None:
            return None, []
        size = _get(self.model, slot.tensor).shape[slot.dim]
        widths = size_attributes(module, size)
        suspicious = [name for name, value in vars(module).items()
                      if isinstance(value, int) and not isinstance(value, bool) and value == size
                      and not name.startswith("_") and name not in widths]
        if suspicious:
            return (f"`{path or type(module).__name__}` ({type(module).__name__}) stores its "
                    f"width in `{suspicious[0]}`; register a handler for it with "
                    "compressor.graph.register_handler so the attribute follows"), []
        return None, [(path, name) for name in widths]


def _hyperplanes(shape: torch.Size, flat: list[int]) -> tuple[int, list[int]] | None:
    """If the elements ``flat`` of a tensor form whole hyperplanes along one dimension, return
    that dimension and the hyperplane indices."""
    selected = np.zeros(int(np.prod(shape)), dtype=bool)
    selected[flat] = True
    selected = selected.reshape(tuple(shape))
    for dim in range(selected.ndim):
        if shape[dim] == 1:
            continue
        others = tuple(d for d in range(selected.ndim) if d != dim)
        full = selected.all(axis=others) if others else selected
        indices = np.nonzero(full)[0]
        expected = np.zeros_like(selected)
        index = [slice(None)] * selected.ndim
        index[dim] = indices
        expected[tuple(index)] = True
        if indices.size and np.array_equal(expected, selected):
            return dim, indices.tolist()
    return None


def _tensor_order(traced: Any) -> dict[str, int]:
    """Module name -> position of its first use in the forward pass."""
    order: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "placeholder" and node.name in traced.tensors:
            continue
        for arg in node.all_input_nodes:
            name = traced.tensors.get(arg.name)
            if name is not None:
                order.setdefault(_owner(name), len(order))
    return order

