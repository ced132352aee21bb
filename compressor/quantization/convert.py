"""``convert``: turn a prepared (trained or calibrated) model into the int8 model."""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from compressor.errors import ConfigError
from compressor.quantization.info import INFO_KEY, quantization_info
from compressor.quantization.modes import mark_training, route_train_eval, set_training

__all__ = ["convert"]


def _unobserved(model: GraphModule) -> list[str]:
    """Names of observers / fake quantizers whose range is still empty."""
    empty = []
    for name, module in model.named_modules():
        observer = getattr(module, "activation_post_process", module)
        low = getattr(observer, "min_val", None)
        if isinstance(low, torch.Tensor) and (low.numel() == 0 or not torch.isfinite(low).all()):
            empty.append(name)
    return empty


def convert(prepared: GraphModule) -> GraphModule:
    """Convert a QAT-trained or calibrated model to int8 (``convert_pt2e``).

    Batch norm is folded into the convolutions, weights are stored as int8 and every annotated
    tensor gets quantize/dequantize ops, which ``torch.onnx.export`` writes as QDQ nodes. The
    result is in eval mode; ``.eval()`` / ``.train()`` work on it. The prepared model is consumed
    (use a copy to keep training it).

    Raises:
        ConfigError: ``prepared`` was not prepared, is already converted, or a PTQ model was
            never calibrated.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    info = quantization_info(prepared)
    if info.converted:
        raise ConfigError("This model is already converted to int8.")
    if info.mode == "ptq" and info.calibration_batches == 0:
        raise ConfigError("The PTQ model was never calibrated: run "
                          "compressor.quantization.calibrate(prepared, data) before convert().")
    unobserved = _unobserved(prepared)
    if unobserved:
        raise ConfigError(
            f"{len(unobserved)} quantizer(s) never observed a tensor (e.g. {unobserved[0]}): run "
            "training steps (QAT) or calibrate(prepared, data) with observers on before "
            "convert().")
    set_training(prepared, False)
    converted = convert_pt2e(prepared)
    info.converted = True
    converted.meta[INFO_KEY] = info
    route_train_eval(converted, set_training)
    mark_training(converted, False)  # converted from the eval-mode graph
    return converted
