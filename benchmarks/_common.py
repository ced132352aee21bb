"""Shared pieces of the benchmarks: result files and the dense Fashion-MNIST baseline."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")

import torch  # noqa: E402

import compressor  # noqa: E402
from compressor.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "benchmarks"


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every result."""
    import onnxruntime
    import pytorch_lightning

    return {"compressor": compressor.__version__, "torch": torch.__version__,
            "pytorch_lightning": pytorch_lightning.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}


def write_result(name: str, data: dict[str, Any], table: str) -> None:
    """Write ``results/<name>.json`` (data + environment) and ``results/<name>.md`` (table)."""
    atomic_write_json(RESULTS / f"{name}.json", {"benchmark": name, **data,
                                                 "environment": environment()})
    atomic_write_text(RESULTS / f"{name}.md", table)
    print(table)


def run(recipe: dict[str, Any], folder: str, reuse: bool = True) -> dict[str, Any]:
    """Run a recipe into ``runs/benchmarks/<folder>`` (reusing finished runs) -> metrics."""
    from compressor.recipes.loader import recipe_from_dict
    from compressor.recipes.runner import run_recipe

    out = RUNS / folder
    metrics_file = out / "metrics.json"
    if reuse and metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    return run_recipe(recipe_from_dict(recipe, folder), out, progress=True, report=True).metrics


def dense_baseline() -> dict[str, Any]:
    """The dense ResNet-20 of the built-in ``fashion-mnist-baseline`` recipe (trained once)."""
    from compressor.recipes.loader import load_recipe

    recipe = load_recipe("fashion-mnist-baseline").model_dump(mode="json")
    return run(recipe, "baseline")
