"""Pruning: masks, granularities (unstructured, n:m, channel, head, block), importance criteria,
schedules and allocation. Works on plain ``nn.Module``s; the ``Pruning`` callback wraps it."""

from compressor.pruning.allocation import (
    AllocationRequest,
    Allocator,
    GlobalAllocation,
    NMPattern,
    UniformAllocation,
    default_allocator,
    select_global,
    select_uniform,
)
from compressor.pruning.budget import Budget
from compressor.pruning.config import Allocation, Granularity, PruningConfig
from compressor.pruning.criteria import (
    OBD,
    BNScale,
    Criterion,
    CriterionName,
    Magnitude,
    Random,
    Taylor,
    make_criterion,
)
from compressor.pruning.masks import MaskSet
from compressor.pruning.pruner import Pruner, PruningStatus
from compressor.pruning.report import (
    LayerSparsity,
    SparsityReport,
    measure_status,
    prunable_weights,
    sparsity_report,
)
from compressor.pruning.schedules import Schedule, ScheduleKind, make_schedule
from compressor.pruning.units import (
    UNITS,
    BlockUnits,
    GroupUnits,
    LayerUnits,
    NMUnits,
    PruningUnits,
    make_units,
)

__all__ = [
    "Pruner", "PruningConfig", "PruningStatus", "Granularity", "Allocation", "Budget",
    "Criterion", "CriterionName", "Magnitude", "Taylor", "OBD", "BNScale", "Random",
    "make_criterion", "Schedule", "ScheduleKind", "make_schedule", "MaskSet",
    "select_uniform", "select_global", "AllocationRequest", "Allocator", "UniformAllocation",
    "GlobalAllocation", "NMPattern", "default_allocator", "measure_status",
    "PruningUnits", "LayerUnits", "NMUnits", "GroupUnits", "BlockUnits", "UNITS", "make_units",
    "LayerSparsity", "SparsityReport", "prunable_weights", "sparsity_report",
]
