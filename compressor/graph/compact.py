"""Physical channel removal (``compact``) and its replayable history.

``compact`` slices every parameter and buffer of the removed channels out of the model in place
and updates the module attributes that describe widths (``out_channels``, ``num_features``,
``num_heads``, ...). What it did is recorded as a :class:`CompactionStep` of plain lists and
numbers, so a freshly constructed model can be brought to the same architecture
(:func:`load_compacted`) before a compacted checkpoint's weights are loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.graph.atoms import ChannelSelection
from compressor.graph.dependency import DependencyGraph
from compressor.graph.surgery import (
    HISTORY_ATTRIBUTE,
    CompactionResult,
    CompactionStep,
    apply_step,
    compact_selection,
    trial_difference,
)
from compressor.utils.io import load_checkpoint
from compressor.utils.modes import refresh_mode_state

__all__ = ["CompactionStep", "CompactionResult", "compact", "compact_selection",
           "compaction_history", "load_compacted", "replay_history", "zero_channels",
           "trial_difference", "apply_step"]


def replay_history(model: nn.Module, history: list[Mapping[str, Any]] | list[CompactionStep]
                   ) -> nn.Module:
    """Apply recorded compaction steps to a freshly constructed ``model`` (in place)."""
    for raw in history:
        apply_step(model, raw if isinstance(raw, CompactionStep) else CompactionStep.from_dict(raw))
    refresh_mode_state(model)
    return model


def compaction_history(model: nn.Module) -> list[dict[str, Any]]:
    """The compaction steps applied to ``model`` so far (JSON-serialisable)."""
    return [step.to_dict() for step in getattr(model, HISTORY_ATTRIBUTE, [])]


def load_compacted(model: nn.Module, source: str | Path | Mapping[str, Any]) -> nn.Module:
    """Rebuild a compacted model from a fresh one.

    Args:
        model: A freshly constructed model of the original (uncompacted) architecture.
        source: A file written with ``torch.save({"state_dict": ..., "history": ...})``, or
            such a dictionary: ``history`` is :func:`compaction_history` of the compacted model.

    Returns:
        ``model`` with the compacted architecture and weights.
    """
    data = load_checkpoint(source) if isinstance(source, (str, Path)) else source
    if not isinstance(data, Mapping) or "history" not in data or "state_dict" not in data:
        raise ConfigError("`source` must hold {'state_dict': ..., 'history': ...}; save it with "
                          "torch.save({'state_dict': model.state_dict(), "
                          "'history': compressor.compaction_history(model)}, path).")
    replay_history(model, data["history"])
    model.load_state_dict(data["state_dict"])
    return model


def zero_channels(model: nn.Module, graph: DependencyGraph) -> dict[int, list[int]]:
    """Channels whose every parameter slice is exactly zero (what a channel mask produces)."""
    parameters = dict(model.named_parameters())
    selection: dict[int, list[int]] = {}
    for group in graph.groups:
        zero = []
        for index, channel in enumerate(group.channels):
            slices = [(name, dim, idx) for (name, dim, idx) in
                      ((s.tensor, s.dim, i) for s, i in channel.slices.items())
                      if name in parameters]
            if slices and all(_is_zero(parameters[n], d, i) for n, d, i in slices):
                zero.append(index)
        if len(zero) >= len(group):
            warnings.warn(f"Every channel of group {group.index} ({group.name}) is zero; keeping "
                          "one so the layer does not disappear.", stacklevel=3)
            zero = zero[1:]
        if zero:
            selection[group.index] = zero
    return selection


def _is_zero(tensor: torch.Tensor, dim: int, indices: tuple[int, ...]) -> bool:
    return bool((tensor.detach().index_select(dim, torch.as_tensor(indices)) == 0).all())


def compact(model: nn.Module, example_inputs: Any = None, *, graph: DependencyGraph | None = None,
            selection: ChannelSelection | None = None) -> nn.Module:
    """Physically remove masked channels, in place.

    Channels whose parameter slices are all exactly zero (as left by channel masks) are removed,
    or exactly ``selection`` if given. The compacted model computes the same outputs as the
    masked model, has the same module types and parameter names, and remembers what was
    removed (:func:`compaction_history`) so a fresh model can be rebuilt with
    :func:`load_compacted`.

    Args:
        model: The model to compact (modified in place and returned).
        example_inputs: Inputs for one forward pass (needed unless ``graph`` is given).
        graph: A :class:`DependencyGraph` of ``model`` (built if not given).
        selection: Channels to remove, as group index -> channel indices of ``graph``.

    Returns:
        ``model``, now smaller.
    """
    if graph is None:
        if example_inputs is None:
            raise ConfigError("`compact` needs `example_inputs` (or a prebuilt `graph`) to trace "
                              "the model, e.g. compact(model, torch.randn(2, 3, 32, 32)).")
        graph = DependencyGraph(model, example_inputs)
    if selection is None:
        selection = zero_channels(model, graph)
    return compact_selection(model, graph, selection).model


