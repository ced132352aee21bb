"""The compression library works on plain nn.Modules: its packages never import Lightning."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import compressor

LIGHTNING_FREE = ["errors", "_validation", "utils", "models", "graph", "pruning", "quantization",
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
