"""Restoring weights from checkpoints: every loader gives back exactly the saved weights, and no
loader executes code hidden in a checkpoint (``torch.load(..., weights_only=True)``).

The checkpoints are written by a real (tiny) ``compressor run``: a dense baseline stage, then a
pruned and compacted stage, so the payload is what users actually load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compressor.distillation.teacher import load_teacher_weights
from compressor.errors import ConfigError
from compressor.graph import DependencyGraph, compact_selection, compaction_history, load_compacted
from compressor.models import create_model
from compressor.recipes.loader import recipe_from_dict
from compressor.recipes.restore import RUN_INFO_KEY, restore_model
from compressor.recipes.runner import run_recipe
from compressor.training.checkpoints import load_weights
from compressor.utils.io import atomic_torch_save

INPUTS = torch.randn(4, 1, 8, 8)


def mlp() -> nn.Module:
    return create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[16]).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    recipe = recipe_from_dict({
        "name": "digits-restore", "model": {"name": "mlp", "hidden": [16]}, "data": {"name": "digits"},
        "baseline": {"epochs": 1, "optimizer": {"lr": 0.05}, "limit_train_batches": 2},
        "train": {"epochs": 1, "optimizer": {"lr": 0.05}, "limit_train_batches": 2},
        "pruning": [{"granularity": "channel", "sparsity": 0.5, "schedule": "one-shot", "start_epoch": 0}],
    })
    out = tmp_path_factory.mktemp("run")
    run_recipe(recipe, out, progress=False, report=False)
    return out


@pytest.fixture
def dense_ckpt(run_dir) -> Path:
    return run_dir / "baseline" / "checkpoints" / "last.ckpt"


@pytest.fixture
def compacted_ckpt(run_dir) -> Path:
    return run_dir / "compressed" / "checkpoints" / "last.ckpt"


def saved_weights(path: Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def assert_same_weights(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(state[name], value), name


# ------------------------------------------------------------------------- equal weights


def test_every_checkpoint_of_a_run_loads_with_weights_only(run_dir):
    paths = sorted(run_dir.rglob("*.ckpt"))
    assert len(paths) >= 2
    for path in paths:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["state_dict"] and RUN_INFO_KEY in checkpoint, path


def test_load_weights_restores_a_lightning_checkpoint(dense_ckpt):
    model = mlp()
    expected = saved_weights(dense_ckpt)
    assert not torch.equal(model.state_dict()["net.1.weight"], expected["net.1.weight"])
    assert load_weights(model, dense_ckpt) is model
    assert_same_weights(model, expected)


def test_load_weights_restores_a_plain_state_dict(tmp_path):
    source = mlp()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    target = load_weights(mlp(), path)
    assert_same_weights(target, source.state_dict())
    with torch.no_grad():
        assert torch.equal(target(INPUTS), source(INPUTS))


def test_load_weights_with_another_prefix(tmp_path):
    source = mlp()
    path = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {f"student.{k}": v for k, v in source.state_dict().items()}}, path)
    assert_same_weights(load_weights(mlp(), path, prefix="student."), source.state_dict())


def test_load_weights_errors(tmp_path, compacted_ckpt):
    with pytest.raises(ConfigError, match="does not exist"):
        load_weights(mlp(), tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="do not fit the model"):
        load_weights(mlp(), compacted_ckpt)  # 8 hidden features, the fresh model has 16
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(ConfigError, match="neither a Lightning checkpoint nor a state dict"):
        load_weights(mlp(), path)


def test_restore_model_replays_the_compaction_and_restores_equal_weights(compacted_ckpt):
    restored = restore_model(compacted_ckpt)
    assert restored.input_shape == (1, 8, 8) and restored.num_classes == 10
    assert restored.model.net[1].out_features == 8 and restored.model.net[2].num_features == 8
    assert_same_weights(restored.model, saved_weights(compacted_ckpt))
    assert not restored.model.training
    again = restore_model(compacted_ckpt).model
    with torch.no_grad():
        assert torch.equal(restored.model(INPUTS), again(INPUTS))


def test_restore_model_refuses_a_checkpoint_saved_after_int8_conversion(compacted_ckpt, tmp_path):
    checkpoint = torch.load(compacted_ckpt, map_location="cpu", weights_only=True)
    checkpoint["callbacks"]["QuantizationAwareTraining{'unit': 'epoch'}"] = {"prepared": True,
                                                                            "converted": True}
    path = tmp_path / "converted.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match="after the int8 conversion"):
        restore_model(path)


def test_restore_model_needs_only_the_model_section_of_the_run(compacted_ckpt, tmp_path):
    checkpoint = torch.load(compacted_ckpt, map_location="cpu", weights_only=True)
    recipe = checkpoint[RUN_INFO_KEY]["recipe"]
    recipe["distillation"] = {"teacher": str(tmp_path / "deleted-teacher.ckpt")}  # gone here
    recipe["export"] = {"batch": 32}  # settings of another release
    path = tmp_path / "moved.ckpt"
    torch.save(checkpoint, path)
    restored = restore_model(path)
    assert_same_weights(restored.model, saved_weights(compacted_ckpt))
    assert restored.recipe["name"] == recipe["name"]
    recipe["model"]["hiden"] = 3
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=r"`model` section .*moved\.ckpt.*did you mean .hidden."):
        restore_model(path)


def test_restore_model_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        restore_model(tmp_path / "missing.ckpt")


def test_load_compacted_restores_a_saved_file(tmp_path):
    model = mlp()
    graph = DependencyGraph(model, INPUTS)
    compact_selection(model, graph, {g.index: [0, 3, 5] for g in graph.groups if len(g) > 3})
    path = atomic_torch_save({"state_dict": model.state_dict(), "history": compaction_history(model)},
                             tmp_path / "compacted.pt")
    fresh = load_compacted(mlp(), path).eval()
    assert fresh.net[1].out_features == 13
    assert_same_weights(fresh, model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(INPUTS), model(INPUTS))


def test_load_teacher_weights_restores_a_lightning_checkpoint(dense_ckpt):
    teacher = mlp()
    load_teacher_weights(teacher, dense_ckpt)
    assert_same_weights(teacher, saved_weights(dense_ckpt))


# -------------------------------------------------------------- no code runs while loading


class Exploit:
    """Unpickling this runs arbitrary code (here: it writes ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran while loading')",))


def booby_trapped(dense_ckpt: Path, tmp_path: Path, marker: Path, layout: str) -> Path:
    """A checkpoint of ``layout`` whose weights are fine but which also carries an ``Exploit``."""
    checkpoint = torch.load(dense_ckpt, map_location="cpu", weights_only=True)
    if layout == "lightning":
        checkpoint["hyper_parameters"] = {"note": Exploit(marker)}
    else:  # load_compacted's {"state_dict", "history"} layout
        checkpoint = {"state_dict": saved_weights(dense_ckpt), "history": [], "note": Exploit(marker)}
    path = tmp_path / f"trapped-{layout}.ckpt"
    torch.save(checkpoint, path)
    assert not marker.exists()
    return path


def test_the_trap_really_runs_code_when_loaded_unsafely(dense_ckpt, tmp_path):
    marker = tmp_path / "marker"
    path = booby_trapped(dense_ckpt, tmp_path, marker, "lightning")
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.read_text() == "code ran while loading"


LOADERS = {
    "load_weights": pytest.param(lambda path: load_weights(mlp(), path), "lightning"),
    "restore_model": pytest.param(restore_model, "lightning"),
    "load_teacher_weights": pytest.param(lambda path: load_teacher_weights(mlp(), path), "lightning"),
    "load_compacted": pytest.param(lambda path: load_compacted(mlp(), path), "compacted"),
}


@pytest.mark.parametrize("load, layout", list(LOADERS.values()), ids=list(LOADERS))
def test_a_pickled_object_in_a_checkpoint_is_refused_not_executed(load, layout, dense_ckpt, tmp_path):
    marker = tmp_path / "marker"
    path = booby_trapped(dense_ckpt, tmp_path, marker, layout)
    with pytest.raises(ConfigError, match="never runs code from a file") as caught:
        load(path)
    assert not marker.exists(), "loading the checkpoint executed code from it"
    assert "state_dict" in str(caught.value)  # the fix is named

