"""Our int8 export vs ONNX Runtime's own static quantization of the same fp32 network.

For ResNet-20 and the MobileNetV2-style model (CIFAR-sized 3x32x32 inputs, random weights:
latency does not depend on them), this script

1. exports the fp32 model with ``compressor.export_onnx``;
2. quantizes it with compressor (``prepare_ptq`` -> ``calibrate`` -> ``convert`` -> export;
   QAT produces the same graph layout);
3. quantizes the fp32 ONNX file with ``onnxruntime.quantization.quantize_static`` (QDQ,
   per-channel int8 weights, uint8 activations, after ONNX Runtime's recommended
   ``quant_pre_process``), calibrated on the same batches;
4. times the three files side by side in ONNX Runtime (1 intra-op thread, batch 1 and 32,
   medians of interleaved repeats) and audits which convolutions run int8 kernels.

Run: ``python benchmarks/quantization_speed.py`` (a few minutes). Writes
``benchmarks/results/quantization_speed.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402

import compressor  # noqa: E402
from compressor.export import audit_int8_kernels, export_onnx, measure_latency  # noqa: E402
from compressor.export.runtime import create_session, random_inputs  # noqa: E402
from compressor.models import create_model  # noqa: E402
from compressor.quantization import calibrate, convert, prepare_ptq  # noqa: E402
from compressor.utils.io import atomic_write_json  # noqa: E402

INPUT_SHAPE = (3, 32, 32)
MODELS = {"resnet20": {}, "mobilenetv2": {}}
RESULTS = Path(__file__).parent / "results" / "quantization_speed.json"
TARGET = 0.95  # our int8 file must be at least this fast relative to quantize_static's


def calibration_batches(count: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """The calibration data both quantizers see (synthetic: latency does not depend on it)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, *INPUT_SHAPE, generator=generator) for _ in range(count)]


def quantize_with_onnxruntime(fp32: Path, target: Path, data: list[torch.Tensor]) -> Path:
    """ONNX Runtime's static QDQ quantization (per-channel s8 weights, u8 activations)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.batches = iter([{name: batch.numpy()} for batch in data])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = target.with_name(target.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared))
    name = create_session(prepared).get_inputs()[0].name
    quantize_static(str(prepared), str(target), Reader(name), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return target


def build_files(name: str, options: dict[str, Any], folder: Path,
                data: list[torch.Tensor]) -> dict[str, Path]:
    """fp32, compressor int8 and ONNX Runtime int8 files of one network."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=INPUT_SHAPE[0],
                         image_size=INPUT_SHAPE[1], **options).eval()
    example = data[0][:2]
    files = {"fp32": folder / f"{name}.fp32.onnx", "compressor int8": folder / f"{name}.int8.onnx",
             "onnxruntime int8": folder / f"{name}.ort.onnx"}
    export_onnx(model, files["fp32"], example, latency_batches=(), write_report=False)
    prepared = prepare_ptq(model, example)
    calibrate(prepared, data)
    export_onnx(convert(prepared), files["compressor int8"], example, latency_batches=(),
                write_report=False)
    quantize_with_onnxruntime(files["fp32"], files["onnxruntime int8"], data)
    return files


def measure(files: dict[str, Path], batches: tuple[int, ...], repeats: dict[int, int],
            warmup: int) -> dict[str, Any]:
    """Interleaved latency at each batch size, audits, sizes and ratios of one network."""
    sessions = {label: create_session(path) for label, path in files.items()}
    latency: dict[str, dict[int, float]] = {label: {} for label in files}
    for batch in batches:
        feeds = {label: random_inputs(session, batch) for label, session in sessions.items()}
        results = measure_latency(sessions, feeds=feeds, repeats=repeats[batch], warmup=warmup)
        for label, result in results.items():
            latency[label][batch] = result.median_ms
    entry: dict[str, Any] = {}
    for label, path in files.items():
        audit = audit_int8_kernels(path)
        entry[label] = {
            "file": path.name, "file_size": path.stat().st_size,
            "latency_ms": {str(b): latency[label][b] for b in batches},
            "speedup_vs_fp32": {str(b): latency["fp32"][b] / latency[label][b] for b in batches},
            "int8_compute": audit.int8_compute, "float_compute": audit.float_compute,
            "int8_ops": audit.int8_ops, "float_ops": audit.float_ops,
            "float_nodes": [f"{n.name} ({n.op_type})" for n in audit.float_nodes],
        }
    entry["ours_vs_onnxruntime_speed"] = {
        str(b): latency["onnxruntime int8"][b] / latency["compressor int8"][b] for b in batches}
    entry["meets_target"] = all(r >= TARGET for r in entry["ours_vs_onnxruntime_speed"].values())
    return entry


def markdown(results: dict[str, Any], batches: tuple[int, ...]) -> str:
    """The results as two markdown tables: every file, then our speed relative to ONNX
    Runtime's quantizer."""
    header = ["Model", "Variant", "File size (KiB)"]
    header += [f"b{b} latency (ms)" for b in batches] + [f"b{b} vs fp32" for b in batches]
    header += ["Int8 / float convs+GEMMs"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model, entry in results["models"].items():
        for label in ("fp32", "compressor int8", "onnxruntime int8"):
            row = entry[label]
            cells = [model, label, f"{row['file_size'] / 1024:.0f}"]
            cells += [f"{row['latency_ms'][str(b)]:.3f}" for b in batches]
            cells += [f"{row['speedup_vs_fp32'][str(b)]:.2f}x" for b in batches]
            cells.append(f"{row['int8_compute']} / {row['float_compute']}")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| Model | " + " | ".join(f"compressor vs onnxruntime speed, b{b}"
                                            for b in batches) + " | target >= 0.95x met |",
              "|" + " --- |" * (len(batches) + 2)]
    for model, entry in results["models"].items():
        ratios = entry["ours_vs_onnxruntime_speed"]
        lines.append(f"| {model} | " + " | ".join(f"{ratios[str(b)]:.2f}x" for b in batches)
                     + f" | {'yes' if entry['meets_target'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed runs at batch 1")
    parser.add_argument("--repeats-large", type=int, default=15, help="timed runs at batch 32")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    batches = (1, 32)
    repeats = {1: args.repeats, 32: args.repeats_large}
    data = calibration_batches(8, 16)
    start = time.perf_counter()
    results: dict[str, Any] = {"models": {}}
    with tempfile.TemporaryDirectory(prefix="quantization-speed-") as folder:
        for name, options in MODELS.items():
            print(f"{name}: exporting and quantizing ...", file=sys.stderr, flush=True)
            files = build_files(name, options, Path(folder), data)
            print(f"{name}: timing ...", file=sys.stderr, flush=True)
            results["models"][name] = measure(files, batches, repeats, args.warmup)
    results["settings"] = {
        "input_shape": list(INPUT_SHAPE), "batches": list(batches),
        "repeats": {str(b): r for b, r in repeats.items()}, "warmup": args.warmup,
        "intra_op_threads": 1, "graph_optimization_level": "all",
        "calibration": "8 batches of 16 synthetic images, the same for both quantizers",
        "onnxruntime_quantizer": "quant_pre_process + quantize_static(QDQ, per_channel=True, "
                                 "activation_type=QUInt8, weight_type=QInt8)",
        "compressor_quantizer": "prepare_ptq + calibrate + convert + export_onnx",
    }
    results["environment"] = {
        "compressor": compressor.__version__, "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "processor": platform.processor(),
    }
    results["seconds"] = time.perf_counter() - start
    atomic_write_json(args.out, results)
    print(markdown(results, batches))
    print(f"Wrote {args.out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
