"""Quantization specs (how each tensor is observed and fake-quantized) of our scheme:
uint8 asymmetric per-tensor activations, int8 symmetric per-channel weights ([-127, 127], as
ONNX Runtime's own quantizer uses), int32 biases with scale = input scale x weight scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from compressor.quantization.config import ActivationObserver, QuantizationConfig

__all__ = ["SchemeSpecs", "build_specs", "bias_spec"]

_EPS = 2.0**-12  # smallest scale: keeps constant or dead activations from dividing by zero


@dataclass(frozen=True)
class SchemeSpecs:
    """The specs the quantizer hands to torchao for activations and weights."""

    activation: Any
    weight: Any
    weight_columns: Any  # the same, per column: the (in, out) weight of ``addmm``
    is_qat: bool


def build_specs(config: QuantizationConfig, is_qat: bool) -> SchemeSpecs:
    """Activation and weight specs for QAT (fake quantization with moving-average observers) or
    PTQ (observers chosen by ``config.activation_observer``)."""
    from torchao.quantization.pt2e import (
        FakeQuantize,
        FusedMovingAvgObsFakeQuantize,
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    if is_qat:
        activation_ctr = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, averaging_constant=config.averaging_constant,
            eps=_EPS)
        # The weights' current range at every step (averaging constant 1). Not the fused
        # kernel: it divides a symmetric range by 127.5 where convert_pt2e divides by 127, so
        # the converted weights would differ from the trained ones.
        def weight_ctr(axis: int) -> Any:
            return FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                          averaging_constant=1.0, eps=_EPS, ch_axis=axis)
    else:
        observers = {ActivationObserver.MINMAX: MinMaxObserver.with_args(eps=_EPS),
                     ActivationObserver.MOVING_AVERAGE: MovingAverageMinMaxObserver.with_args(
                         averaging_constant=config.averaging_constant, eps=_EPS),
                     ActivationObserver.HISTOGRAM: HistogramObserver.with_args(eps=_EPS)}
        activation_ctr = observers[ActivationObserver(config.activation_observer)]
        def weight_ctr(axis: int) -> Any:
            return PerChannelMinMaxObserver.with_args(eps=_EPS, ch_axis=axis)
    activation = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255,
                                  qscheme=torch.per_tensor_affine,
                                  observer_or_fake_quant_ctr=activation_ctr)

    def weight(axis: int) -> Any:  # the axis is also given to the observer: torchao passes it
        return QuantizationSpec(  # on only to observer classes named "PerChannel..."
            dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric,
            ch_axis=axis, observer_or_fake_quant_ctr=weight_ctr(axis))

    return SchemeSpecs(activation, weight(0), weight(1), is_qat)


def _bias_qparams(observers: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    activation, weight = observers
    activation_scale, _ = activation.calculate_qparams()
    weight_scale, _ = weight.calculate_qparams()
    scale = (activation_scale * weight_scale).to(torch.float32)
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def bias_spec(input_edge: tuple[Any, Any], weight_edge: tuple[Any, Any]) -> Any:
    """int32 per-channel bias spec derived from the input's and the weight's observers
    (``scale = input_scale * weight_scale``, zero point 0), as ONNX Runtime's integer
    convolutions and GEMMs expect."""
    from torchao.quantization.pt2e.quantizer import DerivedQuantizationSpec

    return DerivedQuantizationSpec(
        derived_from=[input_edge, weight_edge], derive_qparams_fn=_bias_qparams,
        dtype=torch.int32, quant_min=-(2**31) + 1, quant_max=2**31 - 1,
        qscheme=torch.per_channel_symmetric, ch_axis=0)
