import json
import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import compressor
from compressor.errors import ConfigError, ExportError, InvalidTypeError, ParityError
from compressor.export import create_session, export_onnx, read_metadata
from compressor.export.onnx_export import rejected_path_for, report_path_for

from .conftest import REFERENCE_MODELS, tiny_model


@pytest.fixture(scope="module")
def export_reference(tmp_path_factory):
    """Exports each reference model once per module: name -> (model, state before, path,
    report, input shape)."""
    done = {}

    def export(name):
        if name not in done:
            options, shape = next((o, s) for n, o, s in REFERENCE_MODELS if n == name)
            model = tiny_model(name, options, shape)
            model.train()  # the export must not leave it in eval mode
            state = {key: value.clone() for key, value in model.state_dict().items()}
            path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
            report = export_onnx(model, path, torch.randn(3, *shape),
                                 metadata={"experiment": "unit"}, latency_batches=(1, 4),
                                 latency_repeats=3)
            done[name] = (model, state, path, report, shape)
        return done[name]

    return export


@pytest.fixture(params=[m[0] for m in REFERENCE_MODELS])
def exported(request, export_reference):
    return export_reference(request.param)


def test_fp32_round_trip_passes_every_check(exported):
    _, _, path, report, _ = exported
    assert report.accepted and path.is_file() and report.path == str(path)
    assert report.checker == "passed" and report.session == "ok"
    assert report.parity.mode == "fp32" and report.parity.passed
    assert report.parity.max_abs_diff <= report.parity.tolerance
    assert report.quantization == "fp32"
    assert report.file_size == path.stat().st_size
    assert report.audit.int8_compute == 0 and report.audit.float_compute > 0
    assert [r.batch for r in report.latency] == [1, 4]
    assert all(r.median_ms > 0 for r in report.latency)


def test_dynamic_batch_runs_at_batch_1_and_7(exported):
    model, _, path, _, shape = exported
    session = create_session(path)
    (name,) = [node.name for node in session.get_inputs()]
    assert isinstance(session.get_inputs()[0].shape[0], str)
    model.eval()
    try:
        for batch in (1, 7):
            x = torch.randn(batch, *shape)
            (out,) = session.run(None, {name: x.numpy()})
            with torch.no_grad():
                expected = model(x).numpy()
            assert out.shape == (batch, 10)
            np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
    finally:
        model.train()


def test_metadata_is_stored_in_the_file(exported):
    model, _, path, report, shape = exported
    props = read_metadata(onnx.load(str(path)))
    assert props == report.metadata
    assert props["producer"] == "compressor"
    assert props["producer_version"] == compressor.__version__
    assert props["quantization"] == "fp32"
    assert int(props["opset"]) == report.opset >= 18
    assert int(props["parameters"]) == sum(p.numel() for p in model.parameters())
    assert int(props["macs"]) == compressor.count_macs(model, torch.zeros(1, *shape))
    assert float(props["sparsity"]) == 0.0
    assert props["experiment"] == "unit"


def test_report_is_written_as_json(exported):
    _, _, path, report, _ = exported
    saved = json.loads(report_path_for(path).read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["parity"]["passed"] and saved["audit"]["float_compute"] > 0
    assert "Parity with PyTorch" in report.to_markdown() and "pass" in str(report)


def test_user_model_is_unchanged(exported):
    model, state, _, _, _ = exported
    assert all(module.training for module in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_transformer_report_names_float_matmuls(export_reference):
    report = export_reference("vit_tiny")[3]
    modules = {node.module for node in report.audit.float_nodes}
    assert {"layers.0.attn.qkv", "layers.0.attn.proj", "head"} <= modules
    assert any(node.op_type in {"MatMul", "FusedMatMul"} and node.module == "layers.0.attn"
               for node in report.audit.float_nodes)


def test_sparsity_metadata_counts_zeros(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight[:4] = 0
    report = export_onnx(model, tmp_path / "sparse.onnx", torch.randn(2, 8), latency_batches=())
    assert float(report.metadata["sparsity"]) == pytest.approx(32 / 80)


# --- failures -----------------------------------------------------------------------------------

@torch.library.custom_op("compressor_test::double", mutates_args=())
def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_double.register_fake
def _(x):
    return torch.empty_like(x)


class _Doubler(nn.Module):
    def forward(self, x):
        return _double(x)


class _WithCustomOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.odd = _Doubler()

    def forward(self, x):
        return self.odd(self.linear(x))


class _DataDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


class _WithBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.gate = _DataDependent()

    def forward(self, x):
        return self.gate(self.linear(x))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_unexportable_op_names_op_and_module_and_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match=r"compressor_test\.double.*module `odd` \(_Doubler\)"
                                          r".*keep that layer in float"):
        export_onnx(_WithCustomOp(), tmp_path / "m.onnx", torch.randn(2, 4))
    assert _leftovers(tmp_path) == []


def test_uncapturable_model_names_module_and_line(tmp_path):
    with pytest.raises(ExportError, match=r"module `gate` \(_DataDependent\).*test_export\.py"):
        export_onnx(_WithBranch(), tmp_path / "m.onnx", torch.randn(2, 4))
    assert _leftovers(tmp_path) == []


def _triple(x):
    """An ONNX translation of compressor_test::double that computes something else."""
    return x * 3.0


def test_parity_failure_withholds_file_and_writes_report(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match="do not match") as info:
        export_onnx(_WithCustomOp(), target, torch.randn(2, 4),
                    custom_translation_table={torch.ops.compressor_test.double.default: _triple})
    assert not target.exists()
    assert rejected_path_for(target).is_file()
    saved = json.loads(report_path_for(target).read_text())
    assert saved["accepted"] is False and saved["parity"]["passed"] is False
    assert saved["path"] == str(rejected_path_for(target))
    assert info.value.report.accepted is False
    assert _leftovers(tmp_path) == ["m.rejected.onnx", "m.report.json"]


def test_parity_failure_keeps_previous_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    model = nn.Linear(4, 2)
    export_onnx(model, target, torch.randn(2, 4), latency_batches=())
    before = target.read_bytes()
    import compressor.export.onnx_export as module

    real = module.run_session
    monkeypatch.setattr(module, "run_session", lambda s, f: [o + 1.0 for o in real(s, f)])
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(ParityError):
        export_onnx(model, target, torch.randn(2, 4), latency_batches=())
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.rejected.onnx", "m.report.json"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"path": "model.pt"}, ConfigError, r"`path` must end with \.onnx"),
    ({"example_inputs": [1, 2]}, InvalidTypeError, "`example_inputs` must be a tensor"),
    ({"opset": 11}, ConfigError, "`opset` must be >= 18"),
    ({"latency_batches": (0,)}, ConfigError, r"latency_batches\[\]"),
    ({"metadata": {"quantization": "int4"}}, ConfigError, "reserved"),
    ({"audit_level": "max"}, ConfigError, "Unknown `audit_level`"),
    ({"parity_inputs": (torch.randn(2, 4), torch.randn(2, 4))}, ConfigError, "parity_inputs"),
])
def test_bad_arguments_are_rejected_before_any_work(tmp_path, kwargs, error, match):
    arguments = {"path": "model.onnx", "example_inputs": torch.randn(2, 4), **kwargs}
    arguments["path"] = tmp_path / arguments["path"]
    with pytest.raises(error, match=match):
        export_onnx(nn.Linear(4, 2), **arguments)
    assert _leftovers(tmp_path) == []


def test_rejects_non_module(tmp_path):
    with pytest.raises(InvalidTypeError, match="torch.nn.Module"):
        export_onnx(lambda x: x, tmp_path / "m.onnx", torch.randn(2, 4))
