"""Channel labels and their union: label arrays (``compressor.graph.labels``), the union-find over
atoms, and the groups the dependency graph forms from them (residual branches merge, independent
branches stay apart)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from compressor.graph import DependencyGraph
from compressor.graph.atoms import AtomSpace, Slot, UnionFind
from compressor.graph.labels import (
    FIXED,
    broadcast_labels,
    canonical,
    collapse,
    fixed,
    per_index,
    right_align,
    varying_dims,
)

# ----------------------------------------------------------------------------- label arrays


def test_fixed_labels_have_one_position_per_dimension():
    labels = fixed(3)
    assert labels.shape == (1, 1, 1) and labels.dtype == np.int64 and (labels == FIXED).all()
    assert fixed(0).shape == ()


@pytest.mark.parametrize("labels, shape", [
    (np.array([[3, 3, 3], [3, 3, 3]]), (1, 1)),
    (np.array([[1, 2, 3], [1, 2, 3]]), (1, 3)),
    (np.array([[1, 1], [2, 2], [3, 3]]), (3, 1)),
    (np.array([[1, 2], [3, 4]]), (2, 2)),
])
def test_collapse_shrinks_only_constant_dimensions(labels, shape):
    collapsed = collapse(labels)
    assert collapsed.shape == shape
    assert np.array_equal(np.broadcast_to(collapsed, labels.shape), labels)


def test_canonical_maps_atoms_to_their_set_and_keeps_fixed():
    uf = UnionFind()
    uf.grow(4)
    uf.union(1, 3)
    labels = np.array([[0, 1, 3, FIXED]])
    assert canonical(labels, uf).tolist() == [[0, 1, 1, FIXED]]
    uf.union(0, 1)
    assert canonical(np.array([[0, 1, 3]]), uf).tolist() == [[0]]  # one set: collapses


def test_varying_dims_and_right_align():
    labels = np.arange(4).reshape(1, 4, 1)
    assert varying_dims(labels) == {1}
    aligned = right_align(labels, 5)
    assert aligned.shape == (1, 1, 1, 4, 1) and varying_dims(aligned) == {3}


def test_broadcast_labels_like_tensors():
    channels = np.arange(4).reshape(1, 4, 1, 1)
    rows = np.arange(10, 13).reshape(3, 1)
    a, b = broadcast_labels([channels, rows])
    assert a.shape == b.shape == (1, 4, 3, 1)
    assert a[0, 2, 1, 0] == 2 and b[0, 2, 1, 0] == 11


def test_per_index_lists_the_labels_at_each_index():
    labels = np.array([[0, 1], [2, 3], [4, 5]])  # (3, 2)
    assert per_index(labels, 0, 3).tolist() == [[0, 1], [2, 3], [4, 5]]
    assert per_index(labels, 1, 2).tolist() == [[0, 2, 4], [1, 3, 5]]
    assert per_index(np.array([[7], [8]]), 1, 3).tolist() == [[7, 8]] * 3  # broadcast dim


# ------------------------------------------------------------------------------ union-find


def test_union_find_merges_sets_and_keeps_others_apart():
    uf = UnionFind()
    uf.grow(6)
    uf.union(0, 1)
    uf.union_arrays(np.array([2, 3, FIXED]), np.array([1, 4, 5]))  # negatives are ignored
    assert uf.find(0) == uf.find(1) == uf.find(2)
    assert uf.find(3) == uf.find(4) != uf.find(0)
    assert uf.find(5) == 5
    assert len(set(uf.roots(6).tolist())) == 3


def test_union_all_merges_every_atom_ignoring_fixed():
    uf = UnionFind()
    uf.grow(5)
    uf.union_all(np.array([[4, FIXED], [2, 0]]))
    assert uf.find(4) == uf.find(2) == uf.find(0) and uf.find(1) == 1 and uf.find(3) == 3


def test_poison_survives_a_union_and_keeps_the_first_reason():
    uf = UnionFind()
    uf.grow(4)
    uf.poison_atoms(np.array([3]), "first")
    uf.union(0, 3)
    assert uf.reason(0) == "first"
    uf.poison_atoms(np.array([0, FIXED]), "second")
    assert uf.reason(3) == "first"
    uf.union(1, 2)
    uf.poison_atoms(np.array([2]), "other")
    uf.union(1, 0)  # merging two poisoned sets keeps one reason
    assert uf.reason(2) in {"first", "other"}
    assert uf.reason(2) == uf.reason(0)


def test_atom_space_allocates_each_slot_once():
    space = AtomSpace()
    a = space.atoms(Slot("conv.weight", 0), 4)
    b = space.atoms(Slot("conv.weight", 1), 3)
    assert a.tolist() == [0, 1, 2, 3] and b.tolist() == [4, 5, 6]
    assert space.atoms(Slot("conv.weight", 0), 4).tolist() == a.tolist()
    assert space.locate(5) == (Slot("conv.weight", 1), 1)
    positions, indices = space.locate_many(np.array([0, 3, 6]))
    assert positions.tolist() == [0, 0, 1] and indices.tolist() == [0, 3, 2]
    with pytest.raises(ValueError, match="allocated with 4 atoms"):
        space.atoms(Slot("conv.weight", 0), 5)


# ---------------------------------------------------------------- groups of the graph


class Residual(nn.Module):
    """``stem -> (+ branch) -> (+ branch2) -> head`` with an independent tower ``side``."""

    def __init__(self, second_residual: bool = True) -> None:
        super().__init__()
        self.second_residual = second_residual
        self.stem = nn.Conv2d(3, 6, 1)
        self.branch = nn.Conv2d(6, 6, 3, padding=1)
        self.branch2 = nn.Conv2d(6, 6, 3, padding=1)
        self.side = nn.Conv2d(3, 5, 1)
        self.head = nn.Linear(6 + 5, 2)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = y + torch.relu(self.branch(y))
        z = torch.relu(self.branch2(y))
        if self.second_residual:
            z = z + y
        features = torch.cat([z.mean((2, 3)), torch.relu(self.side(x)).mean((2, 3))], 1)
        return self.head(features)


def graph_of(model: nn.Module) -> DependencyGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here may be excluded
        return DependencyGraph(model.eval(), torch.randn(2, 3, 6, 6))


def group_with(graph: DependencyGraph, module: str):
    """The group of the channels ``module`` produces (its output channels)."""
    found = [g for g in graph.groups if module in g.producers]
    assert len(found) == 1, [g.modules for g in graph.groups]
    return found[0]


def test_residual_branches_end_up_in_one_group():
    graph = graph_of(Residual())
    group = group_with(graph, "stem")
    assert {"stem", "branch", "branch2", "head"} <= set(group.modules)
    assert group is group_with(graph, "branch") is group_with(graph, "branch2")
    assert len(group) == 6
    for index, channel in enumerate(group.channels):  # channel k of every branch goes together
        assert channel.slices[Slot("stem.weight", 0)] == (index,)
        assert channel.slices[Slot("branch.weight", 0)] == (index,)
        assert channel.slices[Slot("branch2.weight", 0)] == (index,)
        assert channel.slices[Slot("branch.weight", 1)] == (index,)
        assert channel.slices[Slot("head.weight", 1)] == (index,)


def test_independent_tower_stays_a_separate_group():
    graph = graph_of(Residual())
    tower = group_with(graph, "side")
    assert tower is not group_with(graph, "stem")
    assert set(tower.modules) == {"side", "head"} and len(tower) == 5
    # the tower's channels sit after the 6 residual channels in the head's input
    assert [c.slices[Slot("head.weight", 1)] for c in tower.channels] == [(6 + i,) for i in range(5)]
    residual_inputs = {c.slices[Slot("head.weight", 1)] for c in group_with(graph, "stem").channels}
    assert residual_inputs == {(i,) for i in range(6)}


def test_without_the_second_add_the_last_branch_is_its_own_group():
    graph = graph_of(Residual(second_residual=False))
    last = group_with(graph, "branch2")
    assert last is not group_with(graph, "stem")
    assert group_with(graph, "branch") is group_with(graph, "stem")
    assert last.modules == ("branch2", "head") and len(graph.groups) == 3
    # the merged group still reaches branch2, as the input it reads
    assert Slot("branch2.weight", 1) in group_with(graph, "stem").slots


def test_masks_of_a_merged_channel_cover_every_branch():
    model = Residual()
    graph = graph_of(model)
    group = group_with(graph, "stem")
    masks = graph.masks(model, {group.index: [2]})
    for name in ("stem.weight", "stem.bias", "branch.weight", "branch2.weight", "branch2.bias"):
        assert not masks[name][2].any(), name
    for name in ("branch.weight", "branch2.weight", "head.weight"):
        assert not masks[name][:, 2].any(), name
    assert masks["stem.weight"][[0, 1, 3, 4, 5]].all() and masks["head.weight"][:, 6:].all()
    assert "side.weight" not in masks
