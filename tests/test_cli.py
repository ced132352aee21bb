import json
import subprocess
import sys

import pytest

from compressor.cli import build_parser, main


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in commands:
        assert command in text


@pytest.mark.parametrize("argv, match", [
    (["train", "--epochs", "-1"], "argument --epochs: must be an integer >= 1, got -1"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["train", "--lr", "-0.1"], "argument --lr: must be > 0"),
    (["train", "--model", "resnet21"], "argument --model: invalid choice: 'resnet21'"),
    (["train", "--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
])
def test_argument_errors(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_run_errors_are_reported_not_raised(capsys):
    assert main(["run", "no-such-recipe"]) == 2
    assert "Unknown recipe 'no-such-recipe'" in capsys.readouterr().err


def test_bad_override(capsys):
    assert main(["run", "fashion-mnist-baseline", "--set", "train.epochs=0"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_recipes_lists_builtins(capsys):
    assert main(["recipes"]) == 0
    assert "fashion-mnist-baseline" in capsys.readouterr().out


@pytest.mark.slow
def test_train_writes_checkpoint_and_metrics(tmp_path):
    """The console script end to end on the tiny digits data."""
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "compressor.cli", "train", "--model", "mlp", "--data", "digits",
         "--epochs", "2", "--lr", "0.05", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.5
    assert metrics["parameters"] > 0 and metrics["stages"]["dense"]["train_seconds_per_epoch"] > 0
    assert (out / "dense" / "checkpoints" / "best.ckpt").is_file()
    assert metrics["checkpoint"].endswith("best.ckpt")
    assert "Test accuracy" in (out / "report.md").read_text()
