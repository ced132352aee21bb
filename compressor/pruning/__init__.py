"""Pruning: masks, granularities, importance criteria, schedules and allocation."""

from compressor.pruning.report import LayerSparsity, SparsityReport, prunable_weights, sparsity_report

__all__ = ["LayerSparsity", "SparsityReport", "prunable_weights", "sparsity_report"]
