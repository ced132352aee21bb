"""compressor: prune, quantize and distill PyTorch models in one training loop, and export
smaller int8 ONNX models that ONNX Runtime really accelerates.

The public verbs work on plain ``nn.Module``s; the Lightning callbacks live in
:mod:`compressor.callbacks`.
"""

from importlib.metadata import PackageNotFoundError, version

from compressor.export.onnx_export import export_onnx
from compressor.graph.compact import compact, compaction_history, load_compacted
from compressor.graph.macs import count_macs
from compressor.models import create_model, list_models
from compressor.pruning.report import sparsity_report
from compressor.quantization import calibrate, convert, prepare_ptq, prepare_qat

try:
    __version__ = version("compressor")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__", "create_model", "list_models",
    "sparsity_report", "count_macs", "compact", "compaction_history", "load_compacted",
    "prepare_qat", "prepare_ptq", "calibrate", "convert", "export_onnx",
]
