"""Shared helpers of the export tests: tiny reference models and ONNX Runtime's own quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compressor.models import create_model

# Small versions of every reference architecture (name, options, input shape).
REFERENCE_MODELS = [
    ("resnet8", {"width_mult": 0.5}, (1, 16, 16)),
    ("resnet50", {"width_mult": 0.125}, (1, 16, 16)),
    ("mobilenetv2", {"width_mult": 0.25, "last_channels": 64}, (1, 16, 16)),
    ("vit_tiny", {"dim": 32, "depth": 2, "num_heads": 2, "image_size": 16}, (1, 16, 16)),
    ("mlp", {"hidden": (32,), "image_size": 16}, (1, 16, 16)),
]


def tiny_model(name: str, options: dict, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """A reference model with random, non-trivial batch-norm statistics (so that train and eval
    modes differ, which makes parity meaningful)."""
    model = create_model(name, num_classes=10, in_channels=input_shape[0], **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def quantize_with_onnxruntime(source: Path, target: Path, input_shape: tuple[int, ...]) -> Path:
    """ONNX Runtime's own static quantization: QDQ, per-channel int8 weights, uint8 activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            generator = np.random.default_rng(0)
            self.batches = iter([{"x": generator.standard_normal((4, *input_shape))
                                  .astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return target


@pytest.fixture(scope="module")
def resnet8_fp32(tmp_path_factory):
    """A tiny ResNet-8 exported without verification (for audit and benchmark tests)."""
    from compressor.export import export_onnx

    model = tiny_model(*REFERENCE_MODELS[0]).eval()
    path = tmp_path_factory.mktemp("resnet8") / "resnet8.onnx"
    export_onnx(model, path, torch.randn(2, 1, 16, 16), verify=False, write_report=False)
    return path


@pytest.fixture(scope="module")
def resnet8_int8(resnet8_fp32):
    """The same ResNet-8 quantized by onnxruntime.quantization.quantize_static."""
    return quantize_with_onnxruntime(resnet8_fp32, resnet8_fp32.with_name("resnet8.qdq.onnx"),
                                     (1, 16, 16))
