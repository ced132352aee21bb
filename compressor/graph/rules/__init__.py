"""Label-propagation rules, one module per family of ATen operations."""

from compressor.graph.rules.elementwise import ElementwiseRules
from compressor.graph.rules.layers import LayerRules
from compressor.graph.rules.reductions import ReductionRules
from compressor.graph.rules.shapes import ShapeRules

__all__ = ["ElementwiseRules", "LayerRules", "ReductionRules", "ShapeRules"]
