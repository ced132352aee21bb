"""``QuantizationInfo``: what preparation did, stored on the prepared / converted model."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.fx import GraphModule

from compressor.errors import ConfigError
from compressor.quantization.config import QuantizationConfig

__all__ = ["INFO_KEY", "QuantizationInfo", "quantization_info"]

# Key of the QuantizationInfo in the prepared / converted graph module's ``meta``.
INFO_KEY = "compressor_quantization"


@dataclass
class QuantizationInfo:
    """What preparation did, kept in ``model.meta["compressor_quantization"]``.

    Attributes:
        mode: ``"qat"`` or ``"ptq"``.
        config: The quantizer settings.
        quantized_layers: Module paths of the convolutions / linear layers quantized.
        float_layers: Module paths of those kept in float by ``config.keep_float``.
        converted: Whether :func:`~compressor.quantization.convert` has run.
        calibration_batches: Batches seen by :func:`~compressor.quantization.calibrate`.
        batch_norm_frozen: Whether batch-norm statistics are frozen (QAT).
    """

    mode: str
    config: QuantizationConfig
    quantized_layers: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    converted: bool = False
    calibration_batches: int = 0
    batch_norm_frozen: bool = False


def quantization_info(model: nn.Module) -> QuantizationInfo:
    """The :class:`QuantizationInfo` of a prepared or converted model.

    Raises:
        ConfigError: ``model`` was not prepared by :func:`prepare_qat` / :func:`prepare_ptq`.
    """
    info = model.meta.get(INFO_KEY) if isinstance(model, GraphModule) else None
    if not isinstance(info, QuantizationInfo):
        raise ConfigError(f"{type(model).__name__} was not prepared for quantization: call "
                          "compressor.quantization.prepare_qat(model, example_inputs) or "
                          "prepare_ptq(...) first and pass the model it returns.")
    return info


