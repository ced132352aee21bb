"""The int8-kernel audit: which convolutions and matrix products ONNX Runtime really runs in int8.

A QDQ file is not an int8 model: ONNX Runtime fuses ``DequantizeLinear -> Conv -> QuantizeLinear``
into ``QLinearConv`` only for certain layouts and otherwise runs the float ``Conv`` between
dequantize and quantize nodes. The audit therefore looks at the graph *after* ONNX Runtime's
optimisations (``SessionOptions.optimized_model_filepath``), counts the integer kernels and the
float convolutions / matrix products left, and names the float ones.

The default level is ``"extended"``: it applies every QDQ fusion and its output is portable and
always serialisable. ``"all"`` adds CPU-specific layout changes (NCHWc float convolutions in the
``com.microsoft.nchwc`` domain, NHWC int8 convolutions); those are audited the same way.
"""

from __future__ import annotations

import ast
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compressor.export.runtime import create_session, load_onnx

__all__ = ["INT8_COMPUTE_OPS", "INT8_OTHER_OPS", "FLOAT_COMPUTE_OPS", "FloatNode", "KernelAudit",
           "audit_int8_kernels", "audit_graph"]

# Integer kernels of convolutions and matrix products (ONNX and com.microsoft domains).
INT8_COMPUTE_OPS = frozenset({
    "QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention", "MatMulNBits",
})
# Other integer kernels ONNX Runtime fuses from QDQ patterns.
INT8_OTHER_OPS = frozenset({
    "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearSoftmax", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearReduceMean", "QLinearWhere", "QEmbedLayerNormalization", "QLinearMaxPool",
})
# Float convolutions and matrix products (including ONNX Runtime's fused float variants).
FLOAT_COMPUTE_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul",
    "Attention", "MultiHeadAttention", "NhwcFusedConv",
})
# Node metadata in which torch.onnx.export records the module path of each node.
MODULE_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_QUANTIZE_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear"})


@dataclass(frozen=True)
class FloatNode:
    """A float convolution or matrix product left in the optimised graph."""

    name: str
    op_type: str
    module: str | None


@dataclass
class KernelAudit:
    """Counts of the kernels ONNX Runtime runs after its graph optimisations.

    Attributes:
        optimization_level: ONNX Runtime level of the audited graph.
        int8_ops: Integer kernels by op type (convolutions/matrix products and the others).
        float_ops: Float convolutions / matrix products left, by op type.
        float_nodes: Each float convolution / matrix product with its node name and, when it can
            be recovered from the file, the PyTorch module it came from.
        quantize_ops: ``QuantizeLinear`` / ``DynamicQuantizeLinear`` nodes (float -> int8).
        dequantize_ops: ``DequantizeLinear`` nodes (int8 -> float).
        other_ops: Every other op type, by count.
    """

    optimization_level: str
    int8_ops: dict[str, int] = field(default_factory=dict)
    float_ops: dict[str, int] = field(default_factory=dict)
    float_nodes: list[FloatNode] = field(default_factory=list)
    quantize_ops: int = 0
    dequantize_ops: int = 0
    other_ops: dict[str, int] = field(default_factory=dict)

    @property
    def int8_compute(self) -> int:
        """Convolutions and matrix products that run integer kernels."""
        return sum(n for op, n in self.int8_ops.items() if op in INT8_COMPUTE_OPS)

    @property
    def float_compute(self) -> int:
        """Convolutions and matrix products that run in float."""
        return sum(self.float_ops.values())

    @property
    def int8_fraction(self) -> float:
        """Share of convolutions / matrix products running integer kernels."""
        total = self.int8_compute + self.float_compute
        return self.int8_compute / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        data = asdict(self)
        data.update(int8_compute=self.int8_compute, float_compute=self.float_compute,
                    int8_fraction=self.int8_fraction)
        return data

    def summary(self) -> str:
        """One line, e.g. ``20/21 int8 (QLinearConv 20); float: Gemm 1``."""
        int8 = ", ".join(f"{op} {n}" for op, n in sorted(self.int8_ops.items()))
        line = f"{self.int8_compute}/{self.int8_compute + self.float_compute} int8"
        line += f" ({int8})" if int8 else ""
        if self.float_ops:
            line += "; float: " + ", ".join(f"{op} {n}" for op, n in sorted(self.float_ops.items()))
        return line


def audit_int8_kernels(model: str | Path | bytes, optimization_level: str = "extended",
                       keep_optimized: str | Path | None = None) -> KernelAudit:
    """Audit the graph ONNX Runtime builds from ``model`` (see the module docstring).

    Args:
        model: Path of an ONNX file, or its serialised bytes.
        optimization_level: ``"extended"`` (default, portable) or ``"all"`` (CPU-specific
            layouts); ``"basic"`` shows the graph before the QDQ fusions.
        keep_optimized: If given, the optimised graph is also written there.

    Raises:
        ExportError: ONNX Runtime cannot load the model.
    """
    original = load_onnx(model)
    with tempfile.TemporaryDirectory(prefix="compressor-audit-") as folder:
        target = Path(keep_optimized) if keep_optimized is not None else Path(folder) / "opt.onnx"
        create_session(model, optimization_level=optimization_level, optimized_model_path=target)
        optimized = load_onnx(target)
    return audit_graph(optimized, optimization_level, original)


def audit_graph(optimized: Any, optimization_level: str, original: Any = None) -> KernelAudit:
    """Count the kernels of an already optimised ``onnx.ModelProto``.

    ``original`` (the exported model, whose nodes carry the exporter's module scopes) helps to
    name the PyTorch module of each float node.
    """
    scopes = _module_scopes(original) if original is not None else {}
    producers = {out: node for node in optimized.graph.node for out in node.output}
    counts = Counter(node.op_type for node in optimized.graph.node)
    audit = KernelAudit(optimization_level)
    for node in optimized.graph.node:
        if node.op_type in FLOAT_COMPUTE_OPS:
            audit.float_nodes.append(FloatNode(
                node.name, node.op_type,
                _weight_module(node, producers) or _scope_of(node.name, scopes)))
    for op, count in sorted(counts.items()):
        if op in INT8_COMPUTE_OPS or op in INT8_OTHER_OPS:
            audit.int8_ops[op] = count
        elif op in FLOAT_COMPUTE_OPS:
            audit.float_ops[op] = count
        elif op in _QUANTIZE_OPS:
            audit.quantize_ops += count
        elif op == "DequantizeLinear":
            audit.dequantize_ops += count
        else:
            audit.other_ops[op] = count
    return audit


def _scope_of(name: str, scopes: dict[str, str]) -> str | None:
    """The module scope of an optimised node, whose name may carry ONNX Runtime's decorations
    (``fused <name>``, ``<name>/MatMulScaleFusion/``)."""
    for candidate in (name, name.removeprefix("fused "), name.split("/")[0]):
        if candidate in scopes:
            return scopes[candidate]
    return None


def _module_scopes(model: Any) -> dict[str, str]:
    """Node name -> PyTorch module path, from the exporter's ``name_scopes`` node metadata."""
    found = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key != MODULE_SCOPES_KEY:
                continue
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                continue
            modules = [s for s in scopes[:-1] if s] if isinstance(scopes, list) else []
            if modules:
                found[node.name] = modules[-1]
    return found


def _weight_module(node: Any, producers: dict[str, Any]) -> str | None:
    """The module path encoded in the name of a node's weight initializer (``conv1.weight``,
    possibly behind a ``DequantizeLinear``), if any."""
    if len(node.input) < 2:
        return None
    name = node.input[1]
    producer = producers.get(name)
    if producer is not None and producer.op_type == "DequantizeLinear":
        name = producer.input[0]
    base = name.split("_quantized")[0]
    return base.removesuffix(".weight") if base.endswith(".weight") else None
