"""The per-granularity units behind ``Pruner`` and the replaceable allocation step."""

import pytest
import torch

from compressor.pruning import Pruner, PruningConfig
from compressor.pruning.allocation import (
    AllocationRequest,
    GlobalAllocation,
    NMPattern,
    UniformAllocation,
    default_allocator,
)
from compressor.pruning.config import Granularity
from compressor.pruning.units import UNITS, BlockUnits, GroupUnits, LayerUnits, NMUnits

from .test_pruner import INPUTS, resnet, vit

CASES = [("unstructured", resnet, LayerUnits, 0.5), ("n:m", resnet, NMUnits, None),
         ("channel", resnet, GroupUnits, 0.5), ("head", vit, GroupUnits, 0.5),
         ("block", resnet, BlockUnits, 0.9)]


def test_every_granularity_has_exactly_one_units_class():
    assert set(UNITS) == set(Granularity)


@pytest.mark.parametrize(("granularity", "build", "kind", "sparsity"), CASES,
                         ids=[c[0] for c in CASES])
def test_measured_zeros_are_the_removal_decisions(granularity, build, kind, sparsity):
    """Whatever the granularity, what the masks zero is exactly what was decided."""
    model = build()
    pruner = Pruner(model, PruningConfig(granularity=granularity, sparsity=sparsity), INPUTS)
    assert isinstance(pruner.unit_set, kind)
    pruner.update()
    measured = pruner.unit_set.measured_zero(dict(model.named_parameters()))
    assert set(measured) == set(pruner.removed)
    for unit, removed in pruner.removed.items():
        assert removed.any(), unit
        assert torch.equal(measured[unit], removed), unit


def test_a_replacement_allocator_decides_what_is_removed():
    """The allocation step is replaceable: here, always the first channel of every group."""
    calls = []

    def first_channel(request: AllocationRequest) -> dict[str, torch.Tensor]:
        calls.append(request)
        result = {}
        for unit, removed in request.removed.items():
            chosen = removed.clone()
            chosen[0] = True
            result[unit] = chosen
        return result

    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5), INPUTS, allocator=first_channel)
    pruner.update()
    assert len(calls) == 1 and calls[0].target == 0.5 and calls[0].keep_at_least == 1
    assert pruner.selection() == {pruner.unit_set.groups[u].index: [0] for u in pruner.units}
    assert pruner.status().sparsity == pytest.approx(
        len(pruner.units) / sum(len(r) for r in pruner.removed.values()))


def _request(sparsity, overridden=frozenset(), normalise=False):
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0, 30.0, 40.0])}
    removed = {u: torch.zeros(4, dtype=torch.bool) for u in scores}
    return AllocationRequest(scores, removed, {"a": sparsity, "b": sparsity}, sparsity,
                             overridden, keep_at_least=1, normalise=normalise)


def test_uniform_allocation_gives_every_unit_its_ratio():
    chosen = UniformAllocation()(_request(0.5))
    assert chosen["a"].tolist() == [True, True, False, False]
    assert chosen["b"].tolist() == [True, True, False, False]


def test_global_allocation_ranks_across_units_and_keeps_one_each():
    chosen = GlobalAllocation()(_request(0.5))
    assert chosen["a"].tolist() == [True, True, True, False]  # keep_at_least=1
    assert chosen["b"].tolist() == [True, False, False, False]
    normalised = GlobalAllocation()(_request(0.5, normalise=True))
    assert normalised["a"].sum() == normalised["b"].sum() == 2
    overridden = GlobalAllocation()(_request(0.5, overridden=frozenset({"b"})))
    assert overridden["b"].tolist() == [True, True, False, False]


def test_nm_pattern_keeps_n_of_every_m_along_the_input_dimension():
    scores = torch.arange(2 * 8 * 3 * 3, dtype=torch.float).reshape(2, 8, 3, 3)
    request = AllocationRequest({"w": scores}, {"w": torch.zeros(scores.numel(), dtype=torch.bool)},
                                {"w": 0.5}, 0.5)
    removed = NMPattern(2, 4)(request)["w"].view(scores.shape)
    groups = (~removed).movedim(1, -1).reshape(-1, 4)
    assert (groups.sum(dim=1) == 2).all()
    assert groups[:, 2:].all()  # the larger scores of each run are kept


def test_default_allocator_follows_the_config():
    assert isinstance(default_allocator(PruningConfig(granularity="n:m")), NMPattern)
    assert isinstance(default_allocator(PruningConfig(granularity="channel", sparsity=0.5, allocation="global")),
                      GlobalAllocation)
    assert isinstance(default_allocator(PruningConfig(granularity="channel", sparsity=0.5)), UniformAllocation)
