"""ONNX export with verification in ONNX Runtime: ``onnx.checker``, parity with PyTorch, the
int8-kernel audit of the optimised graph, and latency measured side by side."""

from compressor.export.audit import FloatNode, KernelAudit, audit_int8_kernels
from compressor.export.bench import BenchResult, compare_onnx
from compressor.export.config import ExportConfig
from compressor.export.evaluate import onnx_accuracy
from compressor.export.latency import LatencyResult, measure_latency
from compressor.export.metadata import quantization_scheme, read_metadata
from compressor.export.onnx_export import export_onnx, rejected_path_for, report_path_for
from compressor.export.parity import ParityConfig, ParityResult
from compressor.export.report import ExportReport
from compressor.export.runtime import create_session

__all__ = [
    "export_onnx", "ExportConfig", "ExportReport", "ParityConfig", "ParityResult",
    "KernelAudit", "FloatNode", "audit_int8_kernels",
    "LatencyResult", "measure_latency", "create_session", "compare_onnx", "BenchResult",
    "onnx_accuracy",
    "quantization_scheme", "read_metadata", "report_path_for", "rejected_path_for",
]
