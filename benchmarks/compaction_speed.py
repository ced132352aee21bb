"""Dependency-graph build and physical channel removal: time against model depth.

For CIFAR-style ResNet-20/56/110 and the bottleneck ResNet-50-style model (28x28 inputs,
random weights), this script measures, as medians of interleaved repeats:

* ``graph``: tracing with ``torch.export`` + label propagation + grouping (no validation);
* ``validate``: the trial removal that checks every group on a copy of the model;
* ``compact``: removing 50 % of the channels of every group in place.

Batch norms get realistic running statistics first (a few train-mode forwards), and each
compacted model is checked against its masked version. Torch runs with one thread (``--threads``)
so the figures do not depend on what else the machine is doing. Run:
``python benchmarks/compaction_speed.py`` (about a minute). Writes
``benchmarks/results/compaction_speed.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import compressor
from compressor.graph import DependencyGraph, MaskedNorms, apply_masks, compact_selection
from compressor.graph.compact import trial_difference
from compressor.models import create_model
from compressor.utils.io import atomic_write_json

MODELS = {"resnet20": 20, "resnet56": 56, "resnet110": 110, "resnet50": 50}
RESULTS = Path(__file__).parent / "results" / "compaction_speed.json"


def half_of_every_group(graph: DependencyGraph) -> dict[int, list[int]]:
    return {g.index: list(range(len(g) // 2)) for g in graph.groups if len(g) > 1}


def calibrated(name: str) -> torch.nn.Module:
    """A randomly initialised model whose batch norms saw a few batches (not all zero output)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28))
    return model.eval()


def measure(name: str, inputs: torch.Tensor) -> dict[str, Any]:
    model = calibrated(name)
    start = time.perf_counter()
    graph = DependencyGraph(model, inputs, validate=False, warn=False)
    graph_seconds = time.perf_counter() - start
    selection = half_of_every_group(graph)
    start = time.perf_counter()
    problem = trial_difference(model, graph, {g: c[:1] for g, c in selection.items()})
    validate_seconds = time.perf_counter() - start
    masked = copy.deepcopy(model)
    apply_masks(masked, graph.masks(masked, selection))
    with MaskedNorms(masked, graph, selection), torch.no_grad():
        expected = masked(inputs)
    start = time.perf_counter()
    compact_selection(model, graph, selection)
    compact_seconds = time.perf_counter() - start
    with torch.no_grad():
        difference = float((model(inputs) - expected).abs().max())
    return {"graph": graph_seconds, "validate": validate_seconds, "compact": compact_seconds,
            "groups": len(graph.groups), "max_abs_diff": difference, "valid": problem is None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs = torch.randn(2, 1, 28, 28)
    warnings.filterwarnings("ignore")
    measure("resnet20", inputs)  # warm-up: the first torch.export call loads a lot of code
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in MODELS}
    for _ in range(args.repeats):
        for name in MODELS:
            runs[name].append(measure(name, inputs))
    rows = {}
    for name, samples in runs.items():
        rows[name] = {key: statistics.median(s[key] for s in samples)
                      for key in ("graph", "validate", "compact")}
        rows[name].update(depth=MODELS[name], groups=samples[0]["groups"],
                          max_abs_diff=max(s["max_abs_diff"] for s in samples),
                          valid=all(s["valid"] for s in samples))
        rows[name]["total"] = rows[name]["graph"] + rows[name]["validate"] + rows[name]["compact"]
    result = {"benchmark": "compaction_speed", "repeats": args.repeats,
              "torch_threads": args.threads, "compressor": compressor.__version__,
              "torch": torch.__version__, "python": platform.python_version(), "models": rows}
    atomic_write_json(RESULTS, result)
    print("| Model | Depth | Groups | Graph (s) | Validation (s) | Compaction (s) | Total (s) "
          "| Max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['depth']} | {row['groups']} | {row['graph']:.2f} | "
              f"{row['validate']:.2f} | {row['compact']:.2f} | {row['total']:.2f} | "
              f"{row['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
