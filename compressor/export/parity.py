"""Parity between a PyTorch model and its ONNX export on the same inputs.

fp32 files must match within ``atol + rtol * max|reference|``. Quantized files cannot match
exactly (ONNX Runtime's integer kernels round differently from PyTorch's reference arithmetic),
so they are judged by top-1 agreement and by the largest difference measured in units of the
output's quantization scale (when the output comes out of a ``DequantizeLinear``; otherwise in
units of ``int8_atol``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from compressor.utils.config import Config, NonNegativeFloat

__all__ = ["ParityConfig", "ParityResult", "compare_outputs", "output_scales"]


class ParityConfig(Config):
    """Acceptance thresholds of the parity check."""

    atol: NonNegativeFloat = 1e-4
    """fp32: absolute tolerance."""
    rtol: NonNegativeFloat = 1e-4
    """fp32: tolerance relative to the largest reference output magnitude."""
    max_scale_units: NonNegativeFloat = 8.0
    """int8: largest allowed difference in units of the output scale."""
    min_top1_agreement: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    """int8: smallest allowed fraction of samples whose arg-max agrees (only for outputs with a
    class dimension)."""
    int8_atol: Annotated[float, Field(gt=0.0)] = 0.05
    """int8: the unit of the difference when the output is not quantized."""


@dataclass(frozen=True)
class ParityResult:
    """Outcome of a parity check (over all outputs).

    Attributes:
        mode: ``"fp32"`` or ``"int8"``.
        passed: Whether the thresholds of the :class:`ParityConfig` were met.
        samples: Rows (batch size) compared.
        max_abs_diff: Largest absolute difference over all outputs.
        tolerance: fp32: the allowed absolute difference; int8: the allowed difference in units.
        max_diff_units: int8: ``max_abs_diff`` in units of the output scale (or ``int8_atol``).
        output_scale: int8: the smallest output quantization scale, if the outputs are quantized.
        top1_agreement: Fraction of rows whose arg-max agrees (outputs with a class dimension).
        reason: Why the check failed (empty when it passed).
    """

    mode: str
    passed: bool
    samples: int
    max_abs_diff: float
    tolerance: float
    max_diff_units: float | None = None
    output_scale: float | None = None
    top1_agreement: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)

    def summary(self) -> str:
        """One line for tables."""
        verdict = "pass" if self.passed else "FAIL"
        if self.mode == "fp32":
            return f"{verdict}: max |diff| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.2e})"
        top1 = ("" if self.top1_agreement is None
                else f", top-1 agreement {self.top1_agreement:.1%}")
        unit = "scale units" if self.output_scale is not None else "x int8_atol"
        return (f"{verdict}: max |diff| {self.max_abs_diff:.3g} = {self.max_diff_units:.2f} {unit}"
                f" (limit {self.tolerance:g}){top1}")


def output_scales(proto: Any) -> list[float | None]:
    """For each graph output, the scale of the ``DequantizeLinear`` producing it (or ``None``)."""
    from onnx import numpy_helper

    inits = {init.name: init for init in proto.graph.initializer}
    constants = {node.output[0]: node for node in proto.graph.node if node.op_type == "Constant"}
    producers = {out: node for node in proto.graph.node for out in node.output}
    scales: list[float | None] = []
    for output in proto.graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type == "Identity":
            node = producers.get(node.input[0])
        scale = None
        if node is not None and node.op_type == "DequantizeLinear":
            name = node.input[1]
            if name in inits:
                scale = float(numpy_helper.to_array(inits[name]).min())
            elif name in constants:
                tensor = next(a.t for a in constants[name].attribute if a.name == "value")
                scale = float(numpy_helper.to_array(tensor).min())
        scales.append(scale)
    return scales


def compare_outputs(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray], mode: str,
                    config: ParityConfig | None = None,
                    scales: Sequence[float | None] | None = None) -> ParityResult:
    """Compare PyTorch outputs (``reference``) with ONNX Runtime outputs (``actual``).

    Args:
        reference: PyTorch outputs, flattened in the order of the ONNX outputs.
        actual: ONNX Runtime outputs.
        mode: ``"fp32"`` or ``"int8"`` (see the module docstring).
        config: Thresholds (defaults of :class:`ParityConfig`).
        scales: int8: output quantization scales (from :func:`output_scales`).
    """
    config = config or ParityConfig()
    if len(reference) != len(actual):
        return ParityResult(mode, False, 0, float("inf"), 0.0,
                            reason=f"PyTorch gave {len(reference)} outputs, ONNX Runtime "
                                   f"{len(actual)}")
    samples = int(reference[0].shape[0]) if reference and reference[0].ndim else 1
    for index, (ref, out) in enumerate(zip(reference, actual, strict=True)):
        if ref.shape != out.shape:
            return ParityResult(mode, False, samples, float("inf"), 0.0,
                                reason=f"output {index}: shape {out.shape} != PyTorch {ref.shape}")
    diffs = [float(np.abs(ref.astype(np.float64) - out.astype(np.float64)).max())
             if ref.size else 0.0 for ref, out in zip(reference, actual, strict=True)]
    max_diff = max(diffs, default=0.0)
    if mode == "fp32":
        magnitude = max((float(np.abs(ref).max()) for ref in reference if ref.size), default=0.0)
        tolerance = config.atol + config.rtol * magnitude
        passed = bool(np.isfinite(max_diff)) and max_diff <= tolerance
        reason = "" if passed else f"max |diff| {max_diff:.3g} > tolerance {tolerance:.3g}"
        return ParityResult(mode, passed, samples, max_diff, tolerance, reason=reason)
    scales = list(scales) if scales is not None else [None] * len(reference)
    units = [diff / (scale if scale else config.int8_atol)
             for diff, scale in zip(diffs, scales, strict=True)]
    agreements = [float((ref.argmax(-1) == out.argmax(-1)).mean())
                  for ref, out in zip(reference, actual, strict=True)
                  if ref.ndim >= 2 and ref.shape[-1] > 1]
    top1 = min(agreements) if agreements else None
    known = [scale for scale in scales if scale]
    max_units = max(units, default=0.0)
    problems = []
    if not np.isfinite(max_units) or max_units > config.max_scale_units:
        problems.append(f"max |diff| is {max_units:.2f} units > {config.max_scale_units:g}")
    if top1 is not None and top1 < config.min_top1_agreement:
        problems.append(f"top-1 agreement {top1:.1%} < {config.min_top1_agreement:.1%}")
    return ParityResult(mode, not problems, samples, max_diff, config.max_scale_units, max_units,
                        min(known) if known else None, top1, "; ".join(problems))
