"""Int8 quantization for ONNX Runtime on torchao's PT2E flow: QAT (``prepare_qat``, train,
``convert``) and PTQ (``prepare_ptq``, ``calibrate``, ``convert``) with
:class:`OrtQuantizer` (int8 symmetric per-channel weights, uint8 per-tensor activations, every
conv/linear output quantized on its own). torchao is imported only when a model is prepared."""

from typing import Any

# No process-wide settings here: torchao's compiled (CUDA) kernels stay enabled for library users.
# The ``compressor`` command sets TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 in its entry point.
from compressor.quantization.calibrate import calibrate
from compressor.quantization.config import ActivationObserver, QuantizationConfig
from compressor.quantization.controls import (
    freeze_batch_norm,
    set_fake_quant,
    set_observers,
    set_qat_training,
)
from compressor.quantization.convert import convert
from compressor.quantization.info import QuantizationInfo, quantization_info
from compressor.quantization.modes import eval_mode, is_exported_model, set_training
from compressor.quantization.prepare import prepare_ptq, prepare_qat

__all__ = [
    "QuantizationConfig", "ActivationObserver", "QuantizationInfo", "OrtQuantizer",
    "prepare_qat", "prepare_ptq", "calibrate", "convert", "quantization_info",
    "freeze_batch_norm", "set_observers", "set_fake_quant", "set_qat_training",
    "set_training", "eval_mode", "is_exported_model",
]


def __getattr__(name: str) -> Any:
    if name == "OrtQuantizer":  # imports torchao: only on demand
        from compressor.quantization.quantizer import OrtQuantizer

        return OrtQuantizer
    raise AttributeError(f"module 'compressor.quantization' has no attribute {name!r}")
