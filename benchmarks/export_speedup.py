"""Channel compaction + int8 against the dense fp32 model in ONNX Runtime (CIFAR ResNet-18).

A CIFAR-style ResNet-18 (3x32x32 inputs, random weights with batch-norm statistics from a few
random batches: latency does not depend on the values) is exported four ways:

* **dense fp32**;
* **int8**: post-training quantization with compressor's ONNX Runtime-targeted quantizer;
* **50 % channels**: half of every group of coupled channels removed physically (fp32);
* **50 % channels + int8**: both.

The files run side by side in ONNX Runtime (1 intra-op thread, medians of interleaved repeats,
batch 1 and 32). Targets for compaction + int8 vs dense fp32: >= 5x faster at batch 1, >= 6x at
batch 32, >= 7x smaller file. Run: ``python benchmarks/export_speedup.py`` (a few minutes).
Writes ``benchmarks/results/export_speedup.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy

import torch
from _common import RUNS, write_result

from compressor.export import compare_onnx, export_onnx
from compressor.models import create_model
from compressor.pruning import Pruner, PruningConfig
from compressor.quantization import calibrate, convert, prepare_ptq

SHAPE = (3, 32, 32)
TARGETS = {"batch1": 5.0, "batch32": 6.0, "size": 7.0}


def random_batches(count: int, size: int = 16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(size, *SHAPE, generator=generator) for _ in range(count)]


def int8(model: torch.nn.Module) -> torch.nn.Module:
    prepared = prepare_ptq(copy.deepcopy(model), random_batches(1)[0][:2])
    calibrate(prepared, random_batches(8))
    return convert(prepared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = create_model("resnet18", num_classes=10, in_channels=3).train()
    with torch.no_grad():
        for batch in random_batches(4):
            dense(batch)
    dense.eval()
    compacted = copy.deepcopy(dense)
    config = PruningConfig(granularity="channel", sparsity=0.5, criterion="l1")
    pruner = Pruner(compacted, config, random_batches(1)[0][:2])
    pruner.update()
    pruner.compact()
    variants = {"dense fp32": dense, "int8": int8(dense), "50% channels": compacted,
                "50% channels + int8": int8(compacted)}
    folder = RUNS / "export_speedup"
    example = random_batches(1)[0][:2]
    files = {}
    for name, model in variants.items():
        path = folder / (name.replace(" ", "_").replace("%", "pct").replace("+", "and") + ".onnx")
        export_onnx(model, path, example, latency_batches=())
        files[name] = str(path)
    bench = compare_onnx(files, baseline="dense fp32", batch_sizes=(1, 32), repeats=args.repeats)
    best = next(e for e in bench.entries if e.name == "50% channels + int8")
    measured = {"batch1": best.speedup[1], "batch32": best.speedup[32], "size": 1 / best.size_ratio}
    data = {"model": "resnet18 (CIFAR)", "input_shape": list(SHAPE), "bench": bench.to_dict(),
            "compacted_plus_int8_vs_dense": measured, "targets": TARGETS,
            "meets_targets": all(measured[k] >= TARGETS[k] for k in TARGETS)}
    table = (f"{bench.title()}\n\n{bench.to_markdown()}\n50% channels + int8 vs dense fp32: "
             f"{measured['batch1']:.2f}x at batch 1 (target {TARGETS['batch1']}x), "
             f"{measured['batch32']:.2f}x at batch 32 (target {TARGETS['batch32']}x), "
             f"{measured['size']:.2f}x smaller file (target {TARGETS['size']}x).\n")
    write_result("export_speedup", data, table)


if __name__ == "__main__":
    main()
