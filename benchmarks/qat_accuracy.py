"""Int8 QAT of ResNet-20 on Fashion-MNIST against fp32 and ONNX Runtime's own PTQ.

From the dense ResNet-20 of the ``fashion-mnist-baseline`` recipe:

* **fp32**: the baseline, exported to ONNX (by the QAT run, before training);
* **QAT (ours)**: ``EPOCHS`` epochs of quantization-aware training (batch norm frozen for the
  last), converted and exported to int8 QDQ ONNX;
* **PTQ (ONNX Runtime)**: ``quantize_static`` of the fp32 ONNX file (QDQ, per-channel int8
  weights, uint8 activations, after ``quant_pre_process``), calibrated on 32 training batches.

Every accuracy is measured in ONNX Runtime on the full 10k test set (what a deployment sees);
the QAT model's PyTorch accuracy is recorded too. Targets: QAT >= fp32 - 0.5 points and
QAT >= PTQ. Run: ``python benchmarks/qat_accuracy.py`` (about 20 minutes plus the baseline if
missing). Writes ``benchmarks/results/qat_accuracy.{json,md}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import RUNS, dense_baseline, run, write_result

from compressor.data import FashionMNISTDataModule
from compressor.export import onnx_accuracy
from compressor.export.runtime import create_session

CALIBRATION_BATCHES = 32
EPOCHS = 4
LEARNING_RATE = 0.01


def ort_static_quantization(fp32: Path, target: Path, data: FashionMNISTDataModule) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

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


def main() -> None:
    dense = dense_baseline()
    recipe = {
        "name": "bench-qat", "seed": 0,
        "model": {"name": "resnet20", "checkpoint": dense["checkpoint"]},
        "data": {"name": "fashion-mnist", "batch_size": 128, "augment": True},
        "train": {"epochs": EPOCHS, "optimizer": {"name": "sgd", "lr": LEARNING_RATE},
                  "scheduler": {"name": "cosine"}},
        "quantization": {"start_epoch": 0, "freeze_bn_epoch": EPOCHS - 1},
        "export": {"batch": 32, "repeats": 20},
    }
    folder = f"qat-{EPOCHS}ep-lr{LEARNING_RATE:g}"
    qat = run(recipe, folder)
    data = FashionMNISTDataModule(augment=False, batch_size=128)
    data.setup()
    fp32 = Path(qat["deployment"]["files"]["dense"])  # the baseline, exported before QAT
    ptq = ort_static_quantization(fp32, RUNS / folder / "ptq_ort.onnx", data)
    accuracy = {
        "fp32": qat["deployment"]["accuracy"]["dense"],
        "qat": qat["deployment"]["accuracy"]["model"],
        "ptq_ort": onnx_accuracy(ptq, data.test_dataloader()),
    }
    result = {"onnx_test_acc": accuracy, "qat_pytorch_test_acc": qat["test_acc"],
              "qat_minus_fp32_points": (accuracy["qat"] - accuracy["fp32"]) * 100,
              "qat_minus_ptq_points": (accuracy["qat"] - accuracy["ptq_ort"]) * 100,
              "meets_targets": accuracy["qat"] >= accuracy["fp32"] - 0.005
              and accuracy["qat"] >= accuracy["ptq_ort"],
              "calibration_batches": CALIBRATION_BATCHES, "recipe": recipe,
              "qat_audit": next(m["audit"] for m in qat["deployment"]["bench"]["models"]
                                if m["name"] == "model")}
    table = ("| ResNet-20, Fashion-MNIST (10k test images, ONNX Runtime) | Test accuracy |\n"
             "| --- | --- |\n"
             f"| fp32 | {accuracy['fp32']:.2%} |\n"
             f"| int8, ONNX Runtime quantize_static (PTQ) | {accuracy['ptq_ort']:.2%} |\n"
             f"| int8, compressor QAT ({EPOCHS} epochs) | {accuracy['qat']:.2%} |\n\n"
             f"QAT vs fp32: {result['qat_minus_fp32_points']:+.2f} points (target >= -0.5); "
             f"QAT vs PTQ: {result['qat_minus_ptq_points']:+.2f} points (target >= 0).\n")
    write_result("qat_accuracy", result, table)


if __name__ == "__main__":
    main()
