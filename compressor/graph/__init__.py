"""Model structure: MAC counting (and, with structured pruning, the dependency graph of coupled
channels and physical channel removal)."""

from compressor.graph.macs import count_macs, macs_by_op, model_size

__all__ = ["count_macs", "macs_by_op", "model_size"]
