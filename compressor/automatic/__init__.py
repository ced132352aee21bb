"""Automatic compression: per-group channel ratios chosen for a budget (ONNX Runtime latency,
MACs or parameters), from sensitivity curves and a latency model measured on this machine.

::

    pruner = Pruner(model, PruningConfig(granularity="channel", allocation="auto",
                                         budget={"latency_speedup": 3.0}), example_inputs)
    plan = plan_compression(pruner, evaluation_batches(val_loader, 4), pruner.config.budget,
                            precision="int8")
    pruner.assign(plan.ratios); pruner.update(); pruner.compact()
"""

from compressor.automatic.allocate import AllocationProblem, BudgetError, allocate, candidate_widths
from compressor.automatic.costs import CostModel, Layer, build_cost_model
from compressor.automatic.latency import LatencyTable, measure_channel_step, measure_layer_grid
from compressor.automatic.plan import CompressionPlan, compact_copy, latency_table, plan_compression
from compressor.automatic.sensitivity import Sensitivity, analyze_sensitivity, evaluation_batches

__all__ = ["plan_compression", "CompressionPlan", "analyze_sensitivity", "Sensitivity",
           "evaluation_batches", "latency_table", "LatencyTable", "measure_layer_grid",
           "measure_channel_step", "allocate", "AllocationProblem", "BudgetError",
           "candidate_widths", "CostModel", "Layer", "build_cost_model", "compact_copy"]
