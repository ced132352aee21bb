"""``QuantizationConfig``: what the ONNX Runtime–targeted quantizer quantizes, how, and when QAT
runs."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from compressor.errors import ConfigError
from compressor.utils.config import Config, NonNegativeInt, StrictBool

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


class QuantizationConfig(Config):
    """Everything about int8 quantization: the settings of
    :class:`~compressor.quantization.quantizer.OrtQuantizer` (int8 symmetric per-channel
    weights, uint8 asymmetric per-tensor activations, for ONNX Runtime) and the QAT schedule of
    the ``QuantizationAwareTraining`` callback and of recipe ``quantization`` sections (the
    quantizer ignores the schedule fields).

    The schedule is given in epochs or in optimizer steps, not both. Epoch events happen at the
    start of the epoch; step events before the step.
    """

    start_epoch: NonNegativeInt | None = None
    """Epoch whose start prepares the model for QAT (default 0: prepared in ``setup``, before
    the optimizers are created)."""
    freeze_bn_epoch: NonNegativeInt | None = None
    """Epoch from which batch norm uses (and stops updating) its running statistics, so the
    folded weights QAT sees match the converted model."""
    freeze_observer_epoch: NonNegativeInt | None = None
    """Epoch from which the quantization ranges stop changing."""
    start_step: NonNegativeInt | None = None
    """Optimizer step that prepares the model (instead of ``start_epoch``)."""
    freeze_bn_step: NonNegativeInt | None = None
    """Optimizer step from which batch norm is frozen."""
    freeze_observer_step: NonNegativeInt | None = None
    """Optimizer step from which the ranges stop changing."""
    keep_float: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    """Module-name patterns (globs, see :mod:`compressor.utils.names`; e.g. ``"conv1"``,
    ``"layers.0.*"``, ``"*.attn"``) whose operations stay in float; ``"@first"`` / ``"@last"``
    name the first / last convolution or linear layer in execution order."""
    quantize_matmul: StrictBool = True
    """Quantize activation-by-activation matrix products (attention ``q @ k^T`` and
    ``weights @ v``); ONNX Runtime runs them as ``QLinearMatMul``."""
    quantize_elementwise: StrictBool = True
    """Quantize residual additions, element-wise products, concatenation and pooling so that
    ONNX Runtime fuses ``QLinearAdd``/``QLinearMul``/``QLinearConcat``/
    ``QLinearGlobalAveragePool`` (otherwise they run in float between dequantize and quantize
    nodes)."""
    activation_observer: ActivationObserver = ActivationObserver.MINMAX
    """Range estimation during calibration (PTQ); QAT always uses moving averages."""
    averaging_constant: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    """Weight of each new batch in the moving-average range estimates (QAT and
    ``activation_observer="moving_average"``)."""
    convert_at_end: StrictBool = True
    """Convert the student to int8 when ``fit`` ends (QAT callback)."""
    student: str | None = None
    """Attribute path of the model to quantize in the LightningModule (default: its only child
    with parameters). It must be a submodule, since it gets replaced."""

    @field_validator("keep_float", mode="before")
    @classmethod
    def _one_pattern(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _schedule(self) -> QuantizationConfig:
        epochs = [name for name in _EPOCH_FIELDS if getattr(self, name) is not None]
        steps = [name for name in _STEP_FIELDS if getattr(self, name) is not None]
        if epochs and steps:
            raise ConfigError(f"Give the QAT schedule in epochs ({', '.join(_EPOCH_FIELDS)}) or "
                              f"in steps ({', '.join(_STEP_FIELDS)}), not both.")
        for name in ("freeze_bn", "freeze_observer"):
            value = getattr(self, f"{name}_{self.unit}")
            if value is not None and value < self.start:
                raise ConfigError(f"`{name}_{self.unit}` ({value}) must not be before the QAT "
                                  f"start ({self.start}).")
        return self

    @property
    def unit(self) -> str:
        """``"step"`` when the schedule is given in optimizer steps, else ``"epoch"``."""
        return "step" if any(getattr(self, name) is not None for name in _STEP_FIELDS) \
            else "epoch"

    @property
    def start(self) -> int:
        """The epoch or step that prepares the model."""
        return getattr(self, f"start_{self.unit}") or 0

    @property
    def freeze_bn_at(self) -> int | None:
        """The epoch or step from which batch norm is frozen."""
        return getattr(self, f"freeze_bn_{self.unit}")

    @property
    def freeze_observer_at(self) -> int | None:
        """The epoch or step from which the quantization ranges are frozen."""
        return getattr(self, f"freeze_observer_{self.unit}")


_EPOCH_FIELDS = ("start_epoch", "freeze_bn_epoch", "freeze_observer_epoch")
_STEP_FIELDS = ("start_step", "freeze_bn_step", "freeze_observer_step")
