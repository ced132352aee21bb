"""compressor: prune, quantize and distill PyTorch models in one training loop, and export
smaller int8 ONNX models that ONNX Runtime really accelerates."""

from importlib.metadata import PackageNotFoundError, version

from compressor.export.onnx_export import export_onnx
from compressor.graph.macs import count_macs
from compressor.models import create_model, list_models
from compressor.pruning.report import sparsity_report

try:
    __version__ = version("compressor")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "count_macs", "export_onnx", "create_model", "list_models",
           "sparsity_report"]
