"""The compression library works on plain nn.Modules: its packages never import Lightning."""

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import compressor

LIGHTNING_FREE = ["errors", "utils", "automatic", "models", "graph", "pruning", "quantization",
                  "distillation", "export"]


def lightning_free_modules() -> list[str]:
    names = ["compressor"]
    for package in LIGHTNING_FREE:
        name = f"compressor.{package}"
        names.append(name)
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):
            names += [info.name for info in pkgutil.walk_packages(module.__path__, name + ".")]
    return names


@pytest.mark.slow
def test_library_packages_do_not_import_lightning():
    modules = lightning_free_modules()
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')]\n"
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"Lightning imported by the library: {result.stdout}"


def test_public_api_is_explicit():
    assert "__all__" in vars(compressor)
    for name in compressor.__all__:
        assert hasattr(compressor, name)


ROOT = Path(compressor.__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the import contracts of pyproject.toml on the ``compressor`` package under ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"),
                           "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=300)


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "compressor", tmp_path / "compressor",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layer_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, statement, contract", [
    ("utils/io.py", "import compressor.callbacks", "Layers"),
    ("graph/atoms.py", "import compressor.pruning.pruner", "Layers"),
    ("graph/atoms.py", "import compressor.graph.dependency", "No import cycles"),
    ("quantization/info.py", "import pytorch_lightning", "no Lightning"),
], ids=["upward-import", "graph-imports-pruning", "cycle-in-a-package", "lightning-in-the-library"])
def test_an_import_against_the_layers_breaks_the_contract(tmp_path, module, statement, contract):
    tree = copy_of_the_package(tmp_path)
    target = tree / "compressor" / module
    target.write_text(target.read_text() + f"\n{statement}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
