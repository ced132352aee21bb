"""``QuantizationConfig``: what the ONNX Runtime–targeted quantizer quantizes and how."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from compressor._validation import check_enum, check_float
from compressor.errors import InvalidTypeError

__all__ = ["ActivationObserver", "QuantizationConfig", "FIRST_LAYER", "LAST_LAYER"]

# Special ``keep_float`` entries: the first / last convolution or linear layer in execution order.
FIRST_LAYER = "@first"
LAST_LAYER = "@last"


class ActivationObserver(str, enum.Enum):
    """How calibration (PTQ) estimates activation ranges.

    ``minmax``: the extreme values seen; ``moving_average``: exponential moving average of each
    batch's extremes (less sensitive to outliers); ``histogram``: the range minimising the
    quantization error of a histogram (slowest, often the most accurate).
    QAT always uses moving-average fake quantization.
    """

    MINMAX = "minmax"
    MOVING_AVERAGE = "moving_average"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class QuantizationConfig:
    """Settings of :class:`~compressor.quantization.quantizer.OrtQuantizer` (int8 symmetric
    per-channel weights, uint8 asymmetric per-tensor activations, for ONNX Runtime).

    Args:
        keep_float: Module-name patterns (globs, see :mod:`compressor.utils.names`; e.g.
            ``"conv1"``, ``"layers.0.*"``, ``"*.attn"``) whose operations stay in float;
            ``"@first"`` / ``"@last"`` name the first / last convolution or linear layer in
            execution order.
        quantize_matmul: Quantize activation-by-activation matrix products (attention
            ``q @ k^T`` and ``weights @ v``); ONNX Runtime runs them as ``QLinearMatMul``.
        quantize_elementwise: Quantize residual additions, element-wise products, concatenation
            and pooling so that ONNX Runtime fuses ``QLinearAdd``/``QLinearMul``/
            ``QLinearConcat``/``QLinearGlobalAveragePool`` (otherwise they run in float between
            dequantize and quantize nodes).
        activation_observer: Range estimation during calibration (PTQ).
        averaging_constant: Weight of each new batch in the moving-average observers (QAT and
            ``activation_observer="moving_average"``).
    """

    keep_float: tuple[str, ...] = ()
    quantize_matmul: bool = True
    quantize_elementwise: bool = True
    activation_observer: ActivationObserver | str = ActivationObserver.MINMAX
    averaging_constant: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.keep_float, str):
            object.__setattr__(self, "keep_float", (self.keep_float,))
        if not all(isinstance(p, str) and p for p in self.keep_float):
            raise InvalidTypeError(f"`keep_float` must be a sequence of non-empty module-name "
                                   f"patterns, got {self.keep_float!r}.")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        for name in ("quantize_matmul", "quantize_elementwise"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidTypeError(f"`{name}` must be True or False, got "
                                       f"{getattr(self, name)!r}.")
        object.__setattr__(self, "activation_observer",
                           check_enum("activation_observer", self.activation_observer,
                                      ActivationObserver))
        check_float("averaging_constant", self.averaging_constant, 0.0, 1.0, low_inclusive=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QuantizationConfig:
        """Build from a mapping (e.g. a recipe section); unknown keys are rejected by name."""
        from compressor._validation import check_kwargs

        check_kwargs("QuantizationConfig", cls, values)
        return cls(**values)
