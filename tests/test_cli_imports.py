"""The light commands (`--help`, `recipes`, `models`) answer without importing torch, Lightning or
torchao, and importing the library changes no process-wide setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "pytorch_lightning", "torchao")


def _imported_by(*args: str) -> set[str]:
    """Top-level names of every module that ``python -X importtime <args>`` imports."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name.split(".")[0])
    assert "compressor" in names, result.stderr[-2000:]
    return names


@pytest.mark.parametrize("code", ["import compressor", "import compressor.cli"])
def test_import_loads_nothing_heavy(code):
    assert _imported_by("-c", code).isdisjoint(HEAVY)


@pytest.mark.parametrize("argv", [["--help"], ["recipes"], ["models"], ["train", "--help"]])
def test_light_commands_load_nothing_heavy(argv):
    # `python -m compressor.cli` runs the same main() as the `compressor` console script.
    assert _imported_by("-m", "compressor.cli", *argv).isdisjoint(HEAVY)


def test_name_tables_match_the_registries():
    from compressor import cli
    from compressor.data.datamodules import list_datamodules
    from compressor.models.registry import list_models

    assert list(cli._MODEL_NAMES) == list_models()
    assert list(cli._DATA_NAMES) == list_datamodules()


def test_library_import_sets_no_environment_variable():
    env = {k: v for k, v in os.environ.items() if k != "TORCHAO_FORCE_SKIP_LOADING_SO_FILES"}
    code = ("import os, compressor, compressor.quantization\n"
            "print(os.environ.get('TORCHAO_FORCE_SKIP_LOADING_SO_FILES'))")
    result = subprocess.run([sys.executable, "-c", code], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
