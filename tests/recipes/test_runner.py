import json

import pytest
import torch

from compressor.errors import ConfigError
from compressor.recipes.loader import recipe_from_dict
from compressor.recipes.restore import restore_model
from compressor.recipes.runner import run_recipe


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    recipe = recipe_from_dict({
        "name": "digits-mlp", "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits"}, "train": {"epochs": 2, "optimizer": {"lr": 0.05}},
    })
    return run_recipe(recipe, tmp_path_factory.mktemp("run"), progress=False, report=False)


def test_run_writes_metrics_report_and_checkpoints(digits_run):
    metrics = json.loads((digits_run.out_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(digits_run.metrics))
    assert metrics["test_acc"] > 0.5 and metrics["stages"]["dense"]["epochs"] == 2
    assert metrics["macs"] == 8 * 8 * 32 + 32 * 10
    assert (digits_run.out_dir / "dense" / "checkpoints" / "last.ckpt").is_file()
    assert digits_run.checkpoint.name == "best.ckpt"
    assert "MACs per sample" in (digits_run.out_dir / "report.md").read_text()


def test_restore_model_rebuilds_the_trained_network(digits_run):
    restored = restore_model(digits_run.checkpoint)
    assert restored.input_shape == (1, 8, 8) and restored.num_classes == 10
    state = torch.load(digits_run.checkpoint, weights_only=False)["state_dict"]
    for name, value in restored.model.state_dict().items():
        assert torch.equal(value, state[f"model.{name}"])
    assert restored.model(*restored.example_inputs(3)).shape == (3, 10)


def test_restore_rejects_foreign_checkpoints(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ConfigError, match="not written by `compressor run`"):
        restore_model(path)


def test_baseline_then_compression_stage(tmp_path):
    recipe = recipe_from_dict({
        "name": "digits-compress", "model": {"name": "resnet8", "width_mult": 0.5},
        "data": {"name": "digits"},
        "baseline": {"epochs": 2, "optimizer": {"lr": 0.05}, "limit_train_batches": 8},
        "train": {"epochs": 2, "optimizer": {"lr": 0.02}, "limit_train_batches": 8},
        "pruning": [{"granularity": "channel", "sparsity": 0.5, "schedule": "one-shot",
                     "start_epoch": 0}],
        "distillation": {"teacher": "self", "alpha": 0.5},
    })
    result = run_recipe(recipe, tmp_path, progress=False, report=False)
    stages = result.metrics["stages"]
    assert list(stages) == ["baseline", "compressed"]
    assert stages["compressed"]["parameters"] < stages["baseline"]["parameters"] / 3
    assert stages["compressed"]["macs"] < stages["baseline"]["macs"] / 3
    assert stages["compressed"]["test_acc"] > 0.3
    report = (tmp_path / "report.md").read_text()
    assert "| Metric | baseline | compressed |" in report
    restored = restore_model(result.checkpoint)
    assert restored.model.conv1.out_channels == 4
    assert sum(p.numel() for p in restored.model.parameters()) == stages["compressed"]["parameters"]


def test_full_pipeline_exports_int8_and_compares_with_dense(tmp_path):
    recipe = recipe_from_dict({
        "name": "digits-pipeline", "model": {"name": "resnet8", "width_mult": 0.5},
        "data": {"name": "digits"},
        "train": {"epochs": 3, "optimizer": {"lr": 0.05}, "limit_train_batches": 6},
        "pruning": [{"granularity": "channel", "sparsity": 0.5, "schedule": "one-shot",
                     "start_epoch": 0}],
        "quantization": {"start_epoch": 1, "freeze_bn_epoch": 2},
        "export": {"batch_sizes": [1, 8], "latency_repeats": 3},
    })
    result = run_recipe(recipe, tmp_path, progress=False, report=False)
    deployment = result.metrics["deployment"]
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "dense.onnx").is_file()
    model_entry, dense_entry = (next(m for m in deployment["bench"]["models"] if m["name"] == k)
                                for k in ("model", "dense"))
    assert model_entry["audit"]["float_compute"] == 0 and model_entry["audit"]["int8_compute"] > 0
    assert model_entry["file_size"] * 2 < dense_entry["file_size"]  # tiny model: graph overhead
    assert 0 < deployment["accuracy"]["model"] <= 1
    assert "ONNX Runtime" in (tmp_path / "report.md").read_text()
    # the last checkpoint was taken during QAT: restoring it gives the int8 model again
    from compressor.quantization import quantization_info

    restored = restore_model(result.checkpoint)
    assert quantization_info(restored.model).converted
    assert restored.model(*restored.example_inputs(3)).shape == (3, 10)


def test_quantization_section_is_validated():
    with pytest.raises(ConfigError, match="must not be before the QAT start"):
        recipe_from_dict({"name": "x", "quantization": {"start_epoch": 3, "freeze_bn_epoch": 1}})


def test_an_automatic_budget_is_reported_against_the_measured_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))
    recipe = recipe_from_dict({
        "name": "digits-auto", "model": {"name": "resnet8"}, "data": {"name": "digits"},
        "train": {"epochs": 2, "optimizer": {"lr": 0.05}, "limit_train_batches": 4},
        "pruning": [{"granularity": "channel", "allocation": "auto",
                     "budget": {"macs": 0.5, "blocks": False}, "schedule": "one-shot",
                     "start_epoch": 0}],
        "export": {"batch_sizes": [1], "latency_repeats": 2},
    })
    result = run_recipe(recipe, tmp_path, progress=False, report=False)
    outcome = result.metrics["automatic"]
    assert outcome["met"] and 0.49 <= outcome["measured"] <= 0.5
    report = (tmp_path / "report.md").read_text()
    assert "## Automatic allocation" in report and "| Group | Channels | Kept |" in report
    assert (tmp_path / "compression_plan.png").stat().st_size > 0
