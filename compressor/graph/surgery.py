"""Graph surgery: slicing channels out of a model's tensors and updating its width attributes.

This is what :func:`~compressor.graph.compact.compact` does and what the dependency graph uses to
check that removing a channel of a group is exact (:func:`trial_difference`). It needs a dependency
graph only as an argument, so it sits below :mod:`compressor.graph.dependency`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.graph.atoms import ChannelSelection, Slot
from compressor.graph.attention import COMPACT_CLASSES
from compressor.graph.handlers import attribute_updates
from compressor.graph.masking import MaskedNorms, apply_masks
from compressor.graph.trace import as_args
from compressor.utils.modes import refresh_mode_state
from compressor.utils.modules import set_submodule

if TYPE_CHECKING:
    from compressor.graph.dependency import DependencyGraph

__all__ = ["CompactionStep", "CompactionResult", "apply_step", "compact_selection",
           "trial_difference", "HISTORY_ATTRIBUTE"]

HISTORY_ATTRIBUTE = "_compressor_history"


@dataclass
class CompactionStep:
    """One compaction: kept indices per ``tensor -> dim`` and the attributes set per module.

    ``identity`` lists modules replaced by ``nn.Identity`` (removed residual blocks).
    """

    kept: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    identity: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {"kept": {name: {str(dim): list(map(int, idx)) for dim, idx in dims.items()}
                         for name, dims in self.kept.items()},
                "attributes": {module: {key: _jsonable(value) for key, value in attrs.items()}
                               for module, attrs in self.attributes.items()},
                "identity": list(self.identity)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompactionStep:
        """Inverse of :meth:`to_dict`."""
        return cls({name: {int(dim): list(idx) for dim, idx in dims.items()}
                    for name, dims in data.get("kept", {}).items()},
                   {module: dict(attrs) for module, attrs in data.get("attributes", {}).items()},
                   list(data.get("identity", [])))


@dataclass
class CompactionResult:
    """What :func:`compact_selection` changed.

    Attributes:
        model: The compacted model (the same object, modified in place).
        step: The replayable record.
        replaced: Old parameter -> (new parameter, kept indices per dim), for moving optimizer
            state.
        removed: Parameters that left the model (inside blocks replaced by the identity).
    """

    model: nn.Module
    step: CompactionStep
    replaced: dict[nn.Parameter, tuple[nn.Parameter, dict[int, list[int]]]]
    removed: list[nn.Parameter] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, torch.Size):
        return list(value)
    return value


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attribute = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attribute


def _slice_tensors(model: nn.Module, kept: Mapping[str, Mapping[int, list[int]]]
                   ) -> dict[nn.Parameter, tuple[nn.Parameter, dict[int, list[int]]]]:
    replaced: dict[nn.Parameter, tuple[nn.Parameter, dict[int, list[int]]]] = {}
    for name, dims in kept.items():
        module, attribute = _owner(model, name)
        old = getattr(module, attribute)
        new = old.detach()
        for dim, indices in sorted(dims.items()):
            new = new.index_select(dim, torch.as_tensor(indices, dtype=torch.long, device=new.device))
        new = new.clone()
        if isinstance(old, nn.Parameter):
            parameter = nn.Parameter(new, requires_grad=old.requires_grad)
            setattr(module, attribute, parameter)
            replaced[old] = (parameter, {int(d): list(i) for d, i in dims.items()})
        else:
            module._buffers[attribute] = new  # noqa: SLF001 - keep it a registered buffer
    return replaced


def _set_attributes(model: nn.Module, attributes: Mapping[str, Mapping[str, Any]]) -> None:
    for path, values in attributes.items():
        module = model.get_submodule(path) if path else model
        for key, value in values.items():
            if key == "__class__":
                module.__class__ = _compact_class(value)
                continue
            current = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(current, tuple) else value)


def _compact_class(name: str) -> type[nn.Module]:
    """A class compaction gives modules, from the name a history records (never imported)."""
    if name not in COMPACT_CLASSES:
        raise ConfigError(f"The compaction history names an unknown module class {name!r} "
                          f"(known: {', '.join(sorted(COMPACT_CLASSES))}); it was written by "
                          "another version of compressor or edited.")
    return COMPACT_CLASSES[name]


def _set_identity(model: nn.Module, paths: list[str]) -> None:
    for path in paths:
        set_submodule(model, path, nn.Identity())


def apply_step(model: nn.Module, step: CompactionStep) -> CompactionResult:
    """Apply one recorded compaction step to ``model`` in place and add it to its history."""
    removed = [p for path in step.identity for p in model.get_submodule(path).parameters()]
    _set_identity(model, step.identity)
    replaced = _slice_tensors(model, step.kept)
    _set_attributes(model, step.attributes)
    _record(model, step)
    refresh_mode_state(model)
    return CompactionResult(model, step, replaced, removed)


def _record(model: nn.Module, step: CompactionStep) -> None:
    history = list(getattr(model, HISTORY_ATTRIBUTE, []))
    history.append(step)
    object.__setattr__(model, HISTORY_ATTRIBUTE, history)


def _plan_step(model: nn.Module, graph: DependencyGraph, selection: ChannelSelection
               ) -> dict[str, dict[int, list[int]]]:
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    kept: dict[str, dict[int, list[int]]] = {}
    for (name, dim), removed in graph.plan(selection).items():
        if name not in tensors:
            continue
        size = tensors[name].shape[dim]
        dropped = set(removed)
        kept.setdefault(name, {})[dim] = [i for i in range(size) if i not in dropped]
    return kept


def _derived_attributes(model: nn.Module, graph: DependencyGraph, selection: ChannelSelection,
                        kept: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    attributes: dict[str, dict[str, Any]] = {}
    for name, dims in kept.items():
        path = name.rpartition(".")[0]
        module = model.get_submodule(path) if path else model
        updates = attribute_updates(module)
        if updates:
            attributes.setdefault(path, {}).update(updates)
        for dim, indices in dims.items():
            for owner, attribute in graph.width_attributes.get(Slot(name, dim), ()):
                attributes.setdefault(owner, {})[attribute] = len(indices)
    removed = graph.removed_atoms(selection)
    for use in graph.norms:
        width = len(graph.kept_positions(use.labels, removed, use.dim))
        module = model.get_submodule(use.module)
        if tuple(module.normalized_shape) != (width,):
            attributes.setdefault(use.module, {})["normalized_shape"] = (width,)
    for (path, attribute), value in _size_updates(model, graph, removed).items():
        attributes.setdefault(path, {})[attribute] = value
    return attributes


def _size_updates(model: nn.Module, graph: DependencyGraph, removed: set[int]
                  ) -> dict[tuple[str, str], int]:
    """New values of the size attributes the graph recorded. An attribute recorded at several
    places takes the value of the records whose size changes (the others saw a dimension of the
    same size that no removal touches)."""
    candidates: dict[tuple[str, str], set[int]] = {}
    for record in graph.size_attributes:
        kept = len(graph.kept_positions(record.labels, removed, record.dim))
        candidates.setdefault((record.module, record.attribute), set()).add(kept)
    updates: dict[tuple[str, str], int] = {}
    for (path, attribute), values in candidates.items():
        module = model.get_submodule(path) if path else model
        current = getattr(module, attribute)
        changed = values - {current}
        if len(changed) > 1:
            raise ConfigError(
                f"`{path or type(module).__name__}.{attribute}` ({current}) would need several "
                f"values at once ({sorted(changed)}) after this removal; prune the groups that "
                "share it to the same width.")
        if changed:
            updates[(path, attribute)] = changed.pop()
    return updates


def compact_selection(model: nn.Module, graph: DependencyGraph, selection: ChannelSelection
                      ) -> CompactionResult:
    """Remove the ``selection`` of channels (group index -> channel indices) from ``model``
    in place, using its dependency ``graph``."""
    for index, channels in selection.items():
        if len(set(channels)) >= len(graph.groups[index]):
            raise ConfigError(f"Cannot remove all {len(graph.groups[index])} channels of group "
                              f"{index} ({graph.groups[index].name}); keep at least one.")
    kept = _plan_step(model, graph, selection)
    replaced = _slice_tensors(model, kept)
    attributes = _derived_attributes(model, graph, selection, kept)
    _set_attributes(model, attributes)
    step = CompactionStep(kept, attributes)
    _record(model, step)
    refresh_mode_state(model)
    return CompactionResult(model, step, replaced)


def trial_difference(model: nn.Module, graph: DependencyGraph, selection: ChannelSelection,
                     tolerance: float = 1e-4) -> str | None:
    """Remove ``selection`` on a copy of ``model`` and compare with masking it on another copy;
    return why they differ, or ``None`` when the removal is exact."""
    inputs = graph.example_inputs
    masked = copy.deepcopy(model).eval()
    try:
        apply_masks(masked, graph.masks(masked, selection))
        with MaskedNorms(masked, graph, selection), torch.no_grad():
            expected = masked(*as_args(inputs))
        compacted = copy.deepcopy(model).eval()
        compact_selection(compacted, graph, selection)
        with torch.no_grad():
            actual = compacted(*as_args(inputs))
    except Exception as error:  # noqa: BLE001 - reported as the reason for exclusion
        return f"removing a channel breaks the forward pass ({type(error).__name__}: {error})"
    difference = _max_difference(expected, actual)
    scale = max(1.0, _max_abs(expected))
    if difference is None:
        return "removing a channel changes the output structure"
    if difference > tolerance * scale:
        return f"removing a channel changes the outputs (max difference {difference:.3g})"
    return None


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _leaves(item)]
    return []


def _max_difference(expected: Any, actual: Any) -> float | None:
    first, second = _leaves(expected), _leaves(actual)
    if len(first) != len(second) or any(a.shape != b.shape for a, b in zip(first, second)):
        return None
    return max((float((a.float() - b.float()).abs().max()) for a, b in zip(first, second)
                if a.numel()), default=0.0)


def _max_abs(value: Any) -> float:
    return max((float(t.float().abs().max()) for t in _leaves(value) if t.numel()), default=0.0)
