import json

import pytest

from compressor.cli import main
from compressor.recipes.loader import recipe_from_dict
from compressor.recipes.runner import run_recipe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    recipe = recipe_from_dict({
        "name": "digits-export", "model": {"name": "resnet8", "width_mult": 0.25},
        "data": {"name": "digits"},
        "train": {"epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1,
                  "optimizer": {"lr": 0.05}},
    })
    result = run_recipe(recipe, tmp_path_factory.mktemp("run"), progress=False, report=False)
    return result.checkpoint


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--batch", "4", "--repeats", "2"])
    return code, out


def test_export_command_writes_verified_file_and_report(exported, capsys):
    code, out = exported
    assert code == 0 and out.is_file()
    report = json.loads(out.with_name("digits.report.json").read_text())
    assert report["accepted"] and report["parity"]["passed"]
    assert report["metadata"]["recipe"] == "digits-export"
    assert [r["batch"] for r in report["latency"]] == [1, 4]


def test_bench_command_compares_with_baseline(exported, tmp_path, capsys):
    from .conftest import quantize_with_onnxruntime

    _, out = exported
    int8 = quantize_with_onnxruntime(out, tmp_path / "digits.int8.onnx", (1, 8, 8))
    result_path = tmp_path / "bench.json"
    code = main(["bench", str(int8), "--baseline", str(out), "--batch", "4", "--repeats", "3",
                 "--json", str(result_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Speed-up b4" in printed and "digits.int8.onnx" in printed
    result = json.loads(result_path.read_text())
    assert result["baseline"] == "digits.onnx" and result["batch_sizes"] == [1, 4]
    int8_entry, base_entry = result["models"]
    assert base_entry["speedup_vs_baseline"] == {"1": 1.0, "4": 1.0}
    assert int8_entry["audit"]["float_compute"] == 0
    assert int8_entry["quantization"].startswith("int8 QDQ")


def test_export_command_exits_non_zero_on_parity_failure(checkpoint, tmp_path, monkeypatch,
                                                         capsys):
    import compressor.export.onnx_export as module

    real = module.run_session
    monkeypatch.setattr(module, "run_session", lambda s, f: [o * 1.5 + 0.1 for o in real(s, f)])
    out = tmp_path / "bad.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), "--batch", "2"]) == 2
    assert "do not match" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "bad.rejected.onnx").is_file()
    assert json.loads((tmp_path / "bad.report.json").read_text())["accepted"] is False


def test_export_command_rejects_foreign_checkpoints(tmp_path, capsys):
    import torch

    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    assert main(["export", str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not written by `compressor run`" in capsys.readouterr().err


def test_bench_command_reports_missing_file(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_command_with_static_batch(checkpoint, tmp_path):
    out = tmp_path / "static.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), "--batch", "3", "--repeats", "2",
                 "--static-batch"]) == 0
    report = json.loads((tmp_path / "static.report.json").read_text())
    assert report["dynamic_batch"] is False and [r["batch"] for r in report["latency"]] == [3]
