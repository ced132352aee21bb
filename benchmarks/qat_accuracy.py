"""Int8 QAT of ResNet-20 on Fashion-MNIST against fp32 and ONNX Runtime's own PTQ.

From the dense ResNet-20 of the ``fashion-mnist-baseline`` recipe:

* **fp32**: the baseline, exported to ONNX (by the QAT run, before training);
* **QAT (ours)**: ``EPOCHS`` epochs of quantization-aware training (batch norm frozen for the
  last), converted and exported to int8 QDQ ONNX -- once alone and once with self-distillation
  from the fp32 model (``Distillation(teacher="self")`` in the same fit, the teacher's forward in
  bfloat16 where the CPU has it natively); every variant tried is in ``VARIANTS``;
* **PTQ (ONNX Runtime)**: ``quantize_static`` of the fp32 ONNX file (QDQ, per-channel int8
  weights, uint8 activations, after ``quant_pre_process``), calibrated on 32 random training
  batches. Its accuracy depends on the batches drawn, so it is measured for
  ``CALIBRATION_SEEDS`` draws and reported as mean and range.

Every accuracy is measured in ONNX Runtime on the full 10k test set (what a deployment sees);
the QAT models' PyTorch accuracy is recorded too. Targets: QAT >= fp32 - 0.5 points and
QAT >= PTQ. Run: ``python benchmarks/qat_accuracy.py`` (about 45 minutes plus the baseline if
missing). Writes ``benchmarks/results/qat_accuracy.{json,md}``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RUNS, dense_baseline, run, write_result

from compressor.data import FashionMNISTDataModule
from compressor.export import onnx_accuracy
from compressor.export.runtime import create_session

CALIBRATION_BATCHES = 32
CALIBRATION_SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 4
LEARNING_RATE = 0.01
#: QAT variants, in the order tried: name -> extra recipe sections.
VARIANTS: dict[str, dict[str, Any]] = {
    "QAT": {},
    "QAT + self-distillation (T=1, alpha=0.5)": {
        "distillation": {"teacher": "self", "temperature": 1.0, "alpha": 0.5,
                         "teacher_precision": "auto"}},
}


def ort_static_quantization(fp32: Path, target: Path, data: FashionMNISTDataModule,
                            seed: int) -> Path:
    """``quantize_static`` of ``fp32`` calibrated on ``CALIBRATION_BATCHES`` training batches
    drawn with ``seed``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    torch.manual_seed(seed)  # the training loader's shuffle
    loader = iter(data.train_dataloader())
    prepared = target.with_name(target.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared))
    name = create_session(prepared).get_inputs()[0].name
    batches = [next(loader)[0].numpy().astype(np.float32) for _ in range(CALIBRATION_BATCHES)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{name: batch} for batch in batches])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return target


def qat_recipe(checkpoint: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "bench-qat", "seed": 0,
        "model": {"name": "resnet20", "checkpoint": checkpoint},
        "data": {"name": "fashion-mnist", "batch_size": 128, "augment": True},
        "train": {"epochs": EPOCHS, "optimizer": {"name": "sgd", "lr": LEARNING_RATE},
                  "scheduler": {"name": "cosine"}},
        "quantization": {"start_epoch": 0, "freeze_bn_epoch": EPOCHS - 1},
        "export": {"batch": 32, "repeats": 20},
        **extra,
    }


def _folder(extra: dict[str, Any]) -> str:
    return f"qat{'-kd' if 'distillation' in extra else ''}-{EPOCHS}ep-lr{LEARNING_RATE:g}"


def main() -> None:
    dense = dense_baseline()
    recipes = {name: qat_recipe(dense["checkpoint"], extra) for name, extra in VARIANTS.items()}
    folders = {name: _folder(extra) for name, extra in VARIANTS.items()}
    runs = {name: run(recipes[name], folders[name]) for name in VARIANTS}
    data = FashionMNISTDataModule(augment=False, batch_size=128)
    data.setup()
    first, folder = next(iter(runs.values())), next(iter(folders.values()))
    fp32 = Path(first["deployment"]["files"]["dense"])  # the baseline, exported before QAT
    fp32_acc = first["deployment"]["accuracy"]["dense"]
    ptq = [onnx_accuracy(ort_static_quantization(fp32, RUNS / folder / f"ptq_ort_{seed}.onnx",
                                                 data, seed), data.test_dataloader())
           for seed in CALIBRATION_SEEDS]
    ptq_mean = statistics.mean(ptq)
    variants = {}
    for name, metrics in runs.items():
        acc = metrics["deployment"]["accuracy"]["model"]
        variants[name] = {
            "onnx_test_acc": acc, "pytorch_test_acc": metrics["test_acc"],
            "minus_fp32_points": (acc - fp32_acc) * 100,
            "minus_ptq_mean_points": (acc - ptq_mean) * 100,
            "meets_targets": acc >= fp32_acc - 0.005 and acc >= ptq_mean,
            "recipe": recipes[name],
            "audit": next(m["audit"] for m in metrics["deployment"]["bench"]["models"]
                          if m["name"] == "model")}
    result = {"fp32_onnx_test_acc": fp32_acc, "ptq_ort_onnx_test_acc": ptq,
              "ptq_ort_mean": ptq_mean, "calibration_batches": CALIBRATION_BATCHES,
              "calibration_seeds": list(CALIBRATION_SEEDS), "qat": variants}
    rows = "".join(f"| int8, compressor {name} ({EPOCHS} epochs) | {v['onnx_test_acc']:.2%} | "
                   f"{v['minus_fp32_points']:+.2f} | {v['minus_ptq_mean_points']:+.2f} |\n"
                   for name, v in variants.items())
    table = ("| ResNet-20, Fashion-MNIST (10k test images, ONNX Runtime) | Test accuracy | "
             "vs fp32 (points) | vs PTQ mean (points) |\n| --- | --- | --- | --- |\n"
             f"| fp32 | {fp32_acc:.2%} | | |\n"
             f"| int8, ONNX Runtime quantize_static (PTQ), mean of {len(ptq)} calibration draws "
             f"| {ptq_mean:.2%} (range {min(ptq):.2%}-{max(ptq):.2%}) | "
             f"{(ptq_mean - fp32_acc) * 100:+.2f} | |\n" + rows +
             "\nTargets: QAT >= fp32 - 0.5 points and QAT >= PTQ.\n")
    write_result("qat_accuracy", result, table)


if __name__ == "__main__":
    main()
