"""QAT on ResNet-20, the MobileNetV2-style model and the ViT: prepare, train a few steps,
convert, and verify the int8 model in ONNX Runtime."""

import numpy as np
import pytest
import torch

from compressor.export import export_onnx
from compressor.quantization import (
    convert,
    prepare_qat,
    quantization_info,
    set_observers,
    set_qat_training,
)

from .conftest import batches, tiny, train_steps


# Converting a model with batch norm costs ~15 s (torchao re-traces its conv-bn folding
# patterns), so the MobileNetV2 QAT run is in the slow suite; its layout is also covered by PTQ.
@pytest.fixture(scope="module", params=[
    "resnet20", "vit_tiny", pytest.param("mobilenetv2", marks=pytest.mark.slow)])
def qat_run(request, tmp_path_factory):
    """QAT for a few steps, then fake-quantized outputs, conversion and the ONNX export."""
    model = tiny(request.param)
    prepared = prepare_qat(model, batches(1)[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train_steps(prepared, 4)
    set_qat_training(prepared, False)
    set_observers(prepared, False)
    x = batches(1, size=6, seed=3)[0]
    with torch.no_grad():
        fake_quantized = prepared(x)
    converted = convert(prepared)
    with torch.no_grad():
        int8 = converted(x)
    path = tmp_path_factory.mktemp(request.param) / "int8.onnx"
    report = export_onnx(converted, path, x, latency_batches=(1,), latency_repeats=3)
    return request.param, model, before, losses, fake_quantized, int8, converted, report


def test_training_updates_the_shared_parameters(qat_run):
    """The prepared model trains the model's own parameter tensors (so an optimizer over
    ``model.parameters()`` keeps working)."""
    _, model, before, losses, *_ = qat_run
    assert all(np.isfinite(losses))
    weights = [k for k in before if k.endswith("weight")]
    assert all(not torch.equal(model.state_dict()[k], before[k]) for k in weights[:3])


def test_converted_model_agrees_with_fake_quantized_model(qat_run):
    """Equal outputs, up to one output quantization step where float accumulation order (which
    depends on the thread count) puts a value on the other side of a rounding boundary."""
    _, _, _, _, fake_quantized, int8, converted, report = qat_run
    difference = (fake_quantized - int8).abs()
    assert float(difference.max()) <= 1.01 * report.parity.output_scale
    assert float((difference <= 1e-5).float().mean()) >= 0.9
    assert quantization_info(converted).converted


def test_int8_export_passes_parity_in_onnxruntime(qat_run):
    report = qat_run[-1]
    assert report.accepted
    assert report.quantization == "int8 QDQ (s8 per-channel weights, u8 activations)"
    assert report.parity.mode == "int8" and report.parity.passed
    assert report.parity.top1_agreement == 1.0 and report.parity.output_scale is not None
    assert int(report.metadata["parameters"]) > 0 and float(report.metadata["sparsity"]) < 0.1


def test_every_conv_and_linear_runs_int8_kernels(qat_run):
    name, _, _, _, _, _, converted, report = qat_run
    audit = report.audit
    layers = len(quantization_info(converted).quantized_layers)
    assert audit.float_compute == 0, audit.float_nodes
    if name == "vit_tiny":  # attention products are QLinearMatMul, linears on tokens QGemm
        assert audit.int8_ops["QLinearMatMul"] == 4
        assert audit.int8_compute == layers + 4
    else:
        assert audit.int8_ops["QLinearConv"] + audit.int8_ops["QGemm"] == layers
        assert audit.int8_ops["QLinearAdd"] > 0
        assert audit.int8_ops["QLinearGlobalAveragePool"] == 1
