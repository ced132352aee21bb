"""Post-training quantization (calibration), layer selection and preparation errors."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compressor.errors import CaptureError, ConfigError, InvalidTypeError, UnknownNameError
from compressor.export import export_onnx
from compressor.quantization import (
    QuantizationConfig,
    calibrate,
    convert,
    prepare_ptq,
    prepare_qat,
    quantization_info,
)

from .conftest import SHAPE, batches, tiny


def _loader(count=3, size=8):
    data = torch.cat(batches(count, size))
    return DataLoader(TensorDataset(data, torch.zeros(len(data), dtype=torch.long)),
                      batch_size=size)


@pytest.fixture(scope="module")
def mobilenet_ptq(tmp_path_factory):
    model = tiny("mobilenetv2").eval()
    prepared = prepare_ptq(model, batches(1)[0])
    used = calibrate(prepared, _loader(), batches=2)
    converted = convert(prepared)
    x = batches(1, size=5, seed=7)[0]
    report = export_onnx(converted, tmp_path_factory.mktemp("m") / "m.onnx", x,
                         latency_batches=(), write_report=False)
    return model, converted, used, report, x


def test_calibration_uses_the_requested_batches(mobilenet_ptq):
    _, converted, used, _, _ = mobilenet_ptq
    assert used == 2 and quantization_info(converted).calibration_batches == 2


def test_ptq_model_stays_close_to_the_float_model(mobilenet_ptq):
    model, converted, _, _, x = mobilenet_ptq
    with torch.no_grad():
        reference, quantized = model(x), converted(x)
    error = (quantized - reference).abs().max() / reference.abs().max()
    assert error < 0.2


def test_ptq_mobilenet_runs_every_conv_in_int8(mobilenet_ptq):
    _, converted, _, report, _ = mobilenet_ptq
    audit = report.audit
    assert report.parity.passed and report.parity.top1_agreement == 1.0
    assert audit.float_compute == 0, audit.float_nodes
    layers = quantization_info(converted).quantized_layers
    assert audit.int8_ops["QLinearConv"] + audit.int8_ops["QGemm"] == len(layers)
    assert audit.int8_ops["QLinearAdd"] > 0 and audit.int8_ops["QLinearGlobalAveragePool"] == 1


_STAGE3 = {name for name, module in tiny("resnet20").named_modules()
           if name.startswith("layers.2.") and isinstance(module, nn.Conv2d)}


@pytest.mark.parametrize("keep, expected", [
    (("conv1", "fc"), {"conv1", "fc"}),
    (("@first", "@last"), {"conv1", "fc"}),
    (("layers.2.*",), _STAGE3),
])
def test_keep_float_patterns_leave_those_layers_in_float(keep, expected, tmp_path):
    prepared = prepare_ptq(tiny("resnet20"), batches(1)[0], QuantizationConfig(keep_float=keep))
    info = quantization_info(prepared)
    assert set(info.float_layers) == expected
    assert not set(info.quantized_layers) & expected
    calibrate(prepared, batches(2))
    report = export_onnx(convert(prepared), tmp_path / "m.onnx", batches(1)[0],
                         latency_batches=(), write_report=False)
    assert report.parity.passed
    assert report.audit.float_compute == len(expected)
    assert {node.module for node in report.audit.float_nodes} == expected


def test_qat_and_ptq_use_the_same_layout():
    model = tiny("resnet20")
    qat = quantization_info(prepare_qat(model, batches(1)[0]))
    ptq = quantization_info(prepare_ptq(model, batches(1)[0]))
    assert qat.quantized_layers == ptq.quantized_layers and qat.mode == "qat"


class _Gate(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.gate = _Gate()

    def forward(self, x):
        return self.gate(self.conv(x))


def test_uncapturable_model_names_module_and_suggests_submodule():
    with pytest.raises(CaptureError, match=r"module `gate` \(_Gate\).*test_ptq\.py.*submodule"
                                           r".*keep `gate`.*float"):
        prepare_qat(_Branchy(), torch.randn(2, *SHAPE))


def test_batch_of_one_is_enough_and_batch_stays_dynamic():
    prepared = prepare_ptq(tiny("resnet20"), torch.randn(1, *SHAPE))
    calibrate(prepared, [torch.randn(1, *SHAPE)])
    converted = convert(prepared)
    assert converted(torch.randn(7, *SHAPE)).shape == (7, 10)


def test_calibrate_reads_dict_batches():
    prepared = prepare_ptq(tiny("resnet20"), batches(1)[0])
    assert calibrate(prepared, [{"image": b, "label": 0} for b in batches(2)]) == 2


@pytest.mark.parametrize("call, error, match", [
    (lambda p: convert(p), ConfigError, "never calibrated"),
    (lambda p: calibrate(p, []), ConfigError, "no batch"),
    (lambda p: calibrate(p, batches(1), batches=0), ConfigError, "`batches` must be >= 1"),
    (lambda p: calibrate(p, [("text", 0)]), ConfigError, "cannot find the model inputs"),
])
def test_calibration_errors(call, error, match):
    prepared = prepare_ptq(nn.Sequential(nn.Flatten(), nn.Linear(256, 4)), batches(1)[0])
    with pytest.raises(error, match=match):
        call(prepared)


def test_convert_twice_is_rejected():
    prepared = prepare_ptq(nn.Sequential(nn.Flatten(), nn.Linear(256, 4)), batches(1)[0])
    calibrate(prepared, batches(1))
    convert(prepared)
    with pytest.raises(ConfigError, match="already converted"):
        convert(prepared)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"keep_float": ("nothing.like.this",)}, ConfigError, "match no convolution or linear"),
    ({"keep_float": ("*",)}, ConfigError, "Nothing to quantize"),
    ({"keep_float": (3,)}, InvalidTypeError, "keep_float"),
    ({"activation_observer": "median"}, UnknownNameError, "activation_observer"),
    ({"averaging_constant": 0}, ConfigError, "averaging_constant"),
    ({"quantize_matmul": "yes"}, InvalidTypeError, "quantize_matmul"),
])
def test_bad_configs(kwargs, error, match):
    with pytest.raises(error, match=match):
        prepare_ptq(tiny("resnet20"), batches(1)[0], QuantizationConfig(**kwargs))


def test_config_from_dict_rejects_unknown_keys():
    assert QuantizationConfig.from_dict({"keep_float": ["fc"]}).keep_float == ("fc",)
    with pytest.raises(ConfigError, match="keep_flaot.*did you mean 'keep_float'"):
        QuantizationConfig.from_dict({"keep_flaot": ["fc"]})


def test_prepare_rejects_bad_arguments():
    with pytest.raises(InvalidTypeError, match="`model` must be a torch.nn.Module"):
        prepare_qat("resnet", batches(1)[0])
    with pytest.raises(InvalidTypeError, match="`example_inputs`"):
        prepare_qat(tiny("resnet20"), [1, 2])
    with pytest.raises(InvalidTypeError, match="`config`"):
        prepare_qat(tiny("resnet20"), batches(1)[0], config="int8")
