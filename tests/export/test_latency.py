import json

import numpy as np
import pytest

from compressor.errors import ConfigError, UnknownNameError
from compressor.export import compare_onnx, create_session, measure_latency


def test_measure_latency_interleaves_models(resnet8_fp32, resnet8_int8):
    results = measure_latency({"fp32": resnet8_fp32, "int8": resnet8_int8}, batch=2, repeats=4,
                              warmup=1)
    assert list(results) == ["fp32", "int8"]
    for name, result in results.items():
        assert result.name == name and result.batch == 2 and result.repeats == 4
        assert 0 < result.min_ms <= result.median_ms
        assert result.per_sample_ms == pytest.approx(result.median_ms / 2)
        assert json.dumps(result.to_dict())


def test_measure_latency_uses_given_sessions_and_feeds(resnet8_fp32):
    session = create_session(resnet8_fp32)
    feeds = {"m": {"x": np.zeros((3, 1, 16, 16), np.float32)}}
    result = measure_latency({"m": session}, feeds=feeds, repeats=2, warmup=0)["m"]
    assert result.batch == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"models": {}}, "`models` is empty"),
    ({"repeats": 0}, "`repeats` must be >= 1"),
    ({"feeds": {"other": {}}}, "unknown models"),
])
def test_measure_latency_errors(resnet8_fp32, kwargs, match):
    arguments = {"models": {"m": resnet8_fp32}, **kwargs}
    with pytest.raises(ConfigError, match=match):
        measure_latency(**arguments)


def test_compare_onnx_reports_speedup_against_baseline(resnet8_fp32, resnet8_int8):
    result = compare_onnx({"int8": resnet8_int8, "fp32": resnet8_fp32}, baseline="fp32",
                          batch_sizes=(1, 4), repeats=3)
    int8, fp32 = result.entries
    assert fp32.speedup == {1: 1.0, 4: 1.0} and fp32.size_ratio == 1.0
    assert int8.speedup[4] == pytest.approx(fp32.latency[4].median_ms / int8.latency[4].median_ms)
    assert int8.size_ratio < 0.6  # int8 weights (a tiny model: names and scales weigh in)
    assert int8.audit.float_compute == 0 and fp32.audit.int8_compute == 0
    table = result.to_markdown()
    assert "Speed-up b4" in table and "int8 QDQ" in table
    assert json.loads(json.dumps(result.to_dict()))["baseline"] == "fp32"


def test_compare_onnx_errors(resnet8_fp32, tmp_path):
    with pytest.raises(UnknownNameError, match="baseline"):
        compare_onnx({"a": resnet8_fp32}, baseline="b")
    with pytest.raises(ConfigError, match="does not exist"):
        compare_onnx({"a": tmp_path / "missing.onnx"})
