import onnx
import pytest

from compressor.errors import ConfigError, ExportError
from compressor.export import audit_int8_kernels, quantization_scheme

RESNET8_CONVS = 1 + 3 * 2 + 2  # stem, two per block, two projection shortcuts


def test_onnxruntime_quantized_resnet8_runs_every_conv_in_int8(resnet8_int8):
    audit = audit_int8_kernels(resnet8_int8)
    assert audit.optimization_level == "extended"
    assert audit.int8_ops["QLinearConv"] == RESNET8_CONVS
    assert audit.int8_ops["QGemm"] == 1
    assert audit.int8_ops["QLinearAdd"] == 3  # the residual additions
    assert audit.float_compute == 0 and audit.float_nodes == []
    assert audit.int8_compute == RESNET8_CONVS + 1 and audit.int8_fraction == 1.0
    assert "10/10 int8" in audit.summary()


def test_audit_reads_the_optimized_graph_not_the_file(resnet8_int8):
    """Before ONNX Runtime's QDQ fusions (level "basic") every conv is a float Conv between
    DequantizeLinear and QuantizeLinear: the file alone says nothing about int8 kernels."""
    audit = audit_int8_kernels(resnet8_int8, "basic")
    assert audit.int8_compute == 0
    assert audit.float_ops == {"Conv": RESNET8_CONVS, "Gemm": 1}
    assert audit.dequantize_ops > RESNET8_CONVS


def test_fp32_model_is_all_float_and_names_modules(resnet8_fp32):
    audit = audit_int8_kernels(resnet8_fp32)
    assert audit.int8_compute == 0 and audit.int8_ops == {}
    assert audit.float_compute == RESNET8_CONVS + 1
    modules = {node.module for node in audit.float_nodes}
    assert {"conv1", "layers.0.0.conv1", "layers.1.0.shortcut.0", "fc"} <= modules


def test_level_all_is_audited_too(resnet8_int8, tmp_path):
    kept = tmp_path / "optimized.onnx"
    audit = audit_int8_kernels(resnet8_int8, "all", keep_optimized=kept)
    assert kept.is_file()
    assert audit.int8_ops["QLinearConv"] == RESNET8_CONVS and audit.float_compute == 0


def test_quantization_scheme_is_read_from_the_graph(resnet8_fp32, resnet8_int8):
    assert quantization_scheme(onnx.load(str(resnet8_fp32))) == "fp32"
    assert (quantization_scheme(onnx.load(str(resnet8_int8)))
            == "int8 QDQ (s8 per-channel weights, u8 activations)")


def test_audit_errors(tmp_path, resnet8_fp32):
    with pytest.raises(ConfigError, match="optimization_level"):
        audit_int8_kernels(resnet8_fp32, "max")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(ExportError, match="Cannot read an ONNX model"):
        audit_int8_kernels(broken)
    with pytest.raises(ExportError, match="Cannot read an ONNX model"):
        audit_int8_kernels(tmp_path / "missing.onnx")
