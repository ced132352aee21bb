"""Knowledge distillation for a 50 %-channel-pruned ResNet-20 on Fashion-MNIST.

From the dense ResNet-20 of the ``fashion-mnist-baseline`` recipe, half of every group of
coupled channels is removed (one-shot, L1, compacted at the end of the first epoch) and the
smaller network is fine-tuned for 6 epochs, without distillation and with distillation from the
dense model (``Distillation(teacher="self", temperature=T, alpha=A)``: the teacher is the model
before compression) for every setting in ``SETTINGS`` (temperature, alpha, teacher precision)
-- all the settings that were tried, so the table shows them all. Everything else is identical;
each variant runs with seeds 0 and 1. Reported: test accuracy (mean of the seeds), the median
training time per epoch of the separate runs, and, side by side in one process, the time of a
training step without and with the teacher forward (the only extra work) at each teacher
precision. ``python benchmarks/distillation.py --steps`` measures only the latter.

Run: ``python benchmarks/distillation.py`` (about 60 minutes on 2 cores, plus the baseline if
missing). Writes ``benchmarks/results/distillation.{json,md}``.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any, NamedTuple

import torch
from _common import dense_baseline, run, write_result
from torch.nn import functional as F

from compressor.distillation import DistillationConfig, Distiller
from compressor.distillation.teacher import has_native_bf16
from compressor.models import create_model
from compressor.pruning import Pruner, PruningConfig
from compressor.training.checkpoints import load_weights

SEEDS = (0, 1)
EPOCHS = 6
TIME_LIMIT = 1.5


class Setting(NamedTuple):
    """One distillation setting: soft-target temperature, KD weight, teacher precision."""

    temperature: float
    alpha: float
    precision: str = "fp32"


SETTINGS = (Setting(4.0, 0.9), Setting(4.0, 0.5), Setting(1.0, 0.5),
            Setting(1.0, 0.5, "bf16"))  # in the order tried
STEP_REPEATS = 30
PRECISIONS = ("fp32", "bf16")


def recipe(checkpoint: str, seed: int, setting: Setting | None) -> dict:
    spec = {
        "name": f"bench-kd-{_label(setting)}-{seed}", "seed": seed,
        "model": {"name": "resnet20", "checkpoint": checkpoint},
        "data": {"name": "fashion-mnist", "batch_size": 128, "augment": True, "seed": seed},
        "train": {"epochs": EPOCHS, "optimizer": {"name": "sgd", "lr": 0.03},
                  "scheduler": {"name": "cosine"}},
        "pruning": [{"granularity": "channel", "sparsity": 0.5, "criterion": "l1",
                     "schedule": "one-shot", "start_epoch": 0}],
    }
    if setting is not None:
        spec["distillation"] = {"teacher": "self", "temperature": setting.temperature,
                                "alpha": setting.alpha, "teacher_precision": setting.precision}
    return spec


def _label(setting: Setting | None) -> str:
    if setting is None:
        return "off"
    suffix = "" if setting.precision == "fp32" else f"-{setting.precision}"
    return f"T{setting.temperature:g}-a{setting.alpha:g}{suffix}"


def _variant(checkpoint: str, setting: Setting | None) -> dict:
    """Test accuracies and median training seconds per epoch of one variant over the seeds."""
    runs = [run(recipe(checkpoint, seed, setting), f"kd-{_label(setting)}-seed{seed}")
            for seed in SEEDS]
    seconds = [r["stages"]["compressed"]["train_seconds_per_epoch"] for r in runs]
    accuracy = [r["test_acc"] for r in runs]
    return {**(setting._asdict() if setting is not None else {}),
            "test_acc": accuracy, "mean_test_acc": statistics.mean(accuracy),
            "train_seconds_per_epoch": seconds, "median_seconds": statistics.median(seconds),
            "parameters": runs[0]["parameters"], "macs": runs[0]["macs"]}


def step_seconds(checkpoint: str, batch: int = 128) -> dict[str, Any]:
    """Median seconds of one training step of the compacted student without the teacher and
    with the teacher forward of the ``Distiller`` the callback uses, at every teacher
    precision, interleaved in one process."""
    teacher = create_model("resnet20", num_classes=10, in_channels=1, image_size=28)
    load_weights(teacher, checkpoint)
    student = copy.deepcopy(teacher)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    pruner = Pruner(student, PruningConfig(granularity="channel", sparsity=0.5, criterion="l1"), inputs[:2])
    pruner.update()
    pruner.compact()
    student.train()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9)
    distillers = {p: Distiller(copy.deepcopy(teacher), student,
                               DistillationConfig(temperature=4.0, alpha=0.5, teacher_precision=p))
                  for p in PRECISIONS}

    def step(precision: str | None) -> float:
        start = time.perf_counter()
        if precision is None:
            loss = F.cross_entropy(student(inputs), labels)
        else:
            distiller = distillers[precision]
            with distiller.capture():
                logits = student(inputs)
            loss = distiller(F.cross_entropy(logits, labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    variants = (None, *PRECISIONS)
    times: dict[str | None, list[float]] = {variant: [] for variant in variants}
    for repeat in range(STEP_REPEATS + 3):
        for variant in variants:
            seconds = step(variant)
            if repeat >= 3:  # warm-up
                times[variant].append(seconds)
    for distiller in distillers.values():
        distiller.close()
    plain = statistics.median(times[None])
    with_teacher = {p: statistics.median(times[p]) for p in PRECISIONS}
    return {"without_kd": plain, "with_kd": with_teacher,
            "ratio": {p: seconds / plain for p, seconds in with_teacher.items()},
            "repeats": STEP_REPEATS, "batch": batch, "torch_threads": torch.get_num_threads(),
            "native_bf16": has_native_bf16(torch.device("cpu"))}


def main() -> None:
    dense = dense_baseline()
    plain = _variant(dense["checkpoint"], None)
    variants = [_variant(dense["checkpoint"], setting) for setting in SETTINGS]
    for variant in variants:
        variant["kd_gain_points"] = (variant["mean_test_acc"] - plain["mean_test_acc"]) * 100
        variant["time_ratio"] = variant["median_seconds"] / plain["median_seconds"]
        variant["meets_targets"] = (variant["kd_gain_points"] > 0
                                    and variant["time_ratio"] <= TIME_LIMIT)
    steps = step_seconds(dense["checkpoint"])
    data = {"dense_test_acc": dense["test_acc"], "seeds": list(SEEDS), "epochs": EPOCHS,
            "time_limit": TIME_LIMIT, "without_kd": plain, "with_kd": variants,
            "step_seconds": steps,
            "dense_parameters": dense["parameters"], "dense_macs": dense["macs"]}
    rows = [_row("without KD", plain)] + [
        _row(f"KD T={v['temperature']:g}, alpha={v['alpha']:g}, {v['precision']} teacher", v,
             f" | {v['kd_gain_points']:+.2f} | {v['time_ratio']:.2f}x") for v in variants]
    table = ("| 50 % channels, ResNet-20, Fashion-MNIST | " + " | ".join(f"seed {s}" for s in SEEDS)
             + " | Mean | Training s/epoch | KD gain (points) | Time vs without KD |\n|"
             + " --- |" * (len(SEEDS) + 5) + "\n" + "\n".join(rows) + "\n\n"
             f"Dense teacher: {dense['test_acc']:.2%}. Targets: a KD gain above 0 and at most "
             f"{TIME_LIMIT}x the time per epoch. Side by side in one process (medians of "
             f"{STEP_REPEATS} interleaved steps, batch {steps['batch']}, "
             f"{steps['torch_threads']} threads), a training step of the compressed student "
             f"takes {steps['without_kd'] * 1e3:.1f} ms without the teacher, "
             + ", ".join(f"{steps['with_kd'][p] * 1e3:.1f} ms with a {p} teacher forward "
                         f"({steps['ratio'][p]:.2f}x)" for p in PRECISIONS)
             + f" (native bfloat16 on this CPU: {'yes' if steps['native_bf16'] else 'no'}). "
             f"Compressed: {plain['parameters']:,} parameters, "
             f"{plain['macs']:,} MACs (dense {dense['parameters']:,}, {dense['macs']:,}).\n")
    write_result("distillation", data, table)


def _row(name: str, variant: dict, extra: str = " | | ") -> str:
    return (f"| {name} | " + " | ".join(f"{a:.2%}" for a in variant["test_acc"])
            + f" | {variant['mean_test_acc']:.2%} | {variant['median_seconds']:.1f}{extra} |")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--steps"]:
        print(step_seconds(dense_baseline()["checkpoint"]))
    else:
        main()
