"""Lightning callbacks. This is the only package of the compression library that imports
Lightning; every callback is a thin adapter over a library function that works without it."""

from compressor.callbacks.distillation import Distillation
from compressor.callbacks.export import ExportONNX
from compressor.callbacks.progress import EpochSummary
from compressor.callbacks.pruning import Pruning
from compressor.callbacks.quantization import QuantizationAwareTraining
from compressor.callbacks.timing import EpochTimer

__all__ = ["Distillation", "EpochTimer", "EpochSummary", "ExportONNX", "Pruning",
           "QuantizationAwareTraining"]
