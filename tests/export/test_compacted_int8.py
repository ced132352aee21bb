"""Every reference model, compacted to half its channels, then also quantized to int8: both
files pass every export check (checker, ONNX Runtime session, parity, dynamic batch)."""

import numpy as np
import pytest
import torch

from compressor.export import create_session, export_onnx
from compressor.pruning import Pruner, PruningConfig
from compressor.quantization import calibrate, convert, prepare_ptq

from .conftest import REFERENCE_MODELS, tiny_model


@pytest.fixture(scope="module", params=[m[0] for m in REFERENCE_MODELS])
def compacted(request):
    name, options, shape = next(m for m in REFERENCE_MODELS if m[0] == request.param)
    torch.manual_seed(0)
    model = tiny_model(name, options, shape).eval()
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5, criterion="l1"), torch.randn(2, *shape))
    dense_parameters = sum(p.numel() for p in model.parameters())
    pruner.update()
    pruner.compact()
    assert sum(p.numel() for p in model.parameters()) < 0.75 * dense_parameters
    return name, model, shape


def run_at(path, batch, shape):
    session = create_session(path)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
        (batch, *shape)).astype(np.float32)}
    return session.run(None, feed)[0]


def test_compacted_fp32_round_trip(compacted, tmp_path):
    name, model, shape = compacted
    report = export_onnx(model, tmp_path / f"{name}.onnx", torch.randn(2, *shape),
                         latency_batches=())
    assert report.accepted and report.parity.passed
    for batch in (1, 7):
        assert run_at(report.path, batch, shape).shape == (batch, 10)


def test_compacted_int8_round_trip(compacted, tmp_path):
    name, model, shape = compacted
    prepared = prepare_ptq(model, torch.randn(2, *shape))
    calibrate(prepared, [torch.randn(8, *shape) for _ in range(4)])
    report = export_onnx(convert(prepared), tmp_path / f"{name}.int8.onnx",
                         torch.randn(2, *shape), latency_batches=())
    assert report.accepted and report.parity.passed
    assert report.audit.int8_compute > 0
    assert run_at(report.path, 7, shape).shape == (7, 10)
