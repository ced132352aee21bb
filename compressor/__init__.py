"""compressor: prune, quantize and distill PyTorch models in one training loop, and export
smaller int8 ONNX models that ONNX Runtime really accelerates.

The public verbs work on plain ``nn.Module``s; the Lightning callbacks live in
:mod:`compressor.callbacks`. They are imported on first use, so ``import compressor`` (and the
``compressor`` command's help) loads neither torch nor anything else heavy.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Public name -> module that defines it (imported on first access, PEP 562).
_LAZY = {
    "export_onnx": "compressor.export.onnx_export",
    "compact": "compressor.graph.compact",
    "compaction_history": "compressor.graph.compact",
    "load_compacted": "compressor.graph.compact",
    "count_macs": "compressor.graph.macs",
    "create_model": "compressor.models",
    "list_models": "compressor.models",
    "sparsity_report": "compressor.pruning.report",
    "prepare_qat": "compressor.quantization",
    "prepare_ptq": "compressor.quantization",
    "calibrate": "compressor.quantization",
    "convert": "compressor.quantization",
}
# Subpackages that ``import compressor`` used to load eagerly stay reachable as attributes.
_SUBMODULES = ("_validation", "errors", "export", "graph", "models", "pruning", "quantization",
               "utils")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"compressor.{name}")
    else:
        raise AttributeError(f"module 'compressor' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
