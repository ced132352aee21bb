"""Knowledge distillation for a 50 %-channel-pruned ResNet-20 on Fashion-MNIST.

From the dense ResNet-20 of the ``fashion-mnist-baseline`` recipe, half of every group of
coupled channels is removed (one-shot, L1, compacted at the end of the first epoch) and the
smaller network is fine-tuned for 6 epochs, without distillation and with distillation from the
dense model (``Distillation(teacher="self", temperature=T, alpha=A)``: the teacher is the model
before compression) for every ``(T, A)`` in ``SETTINGS`` -- all the settings that were tried, so
the table shows them all. Everything else is identical; each variant runs with seeds 0 and 1.
Reported: test accuracy (mean of the seeds) and the median training time per epoch (the teacher
forward is the only extra work).

Run: ``python benchmarks/distillation.py`` (about 40 minutes on 2 cores, plus the baseline if
missing). Writes ``benchmarks/results/distillation.{json,md}``.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from _common import dense_baseline, run, write_result
from torch.nn import functional as F

from compressor.distillation import DistillationConfig, Distiller
from compressor.models import create_model
from compressor.pruning import Pruner, PruningConfig
from compressor.training.checkpoints import load_weights

SEEDS = (0, 1)
EPOCHS = 6
TIME_LIMIT = 1.5
SETTINGS = ((4.0, 0.9), (4.0, 0.5), (1.0, 0.5))  # (temperature, alpha), in the order tried
STEP_REPEATS = 30


def recipe(checkpoint: str, seed: int, setting: tuple[float, float] | None) -> dict:
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
        spec["distillation"] = {"teacher": "self", "temperature": setting[0],
                                "alpha": setting[1]}
    return spec


def _label(setting: tuple[float, float] | None) -> str:
    return "off" if setting is None else f"T{setting[0]:g}-a{setting[1]:g}"


def _variant(checkpoint: str, setting: tuple[float, float] | None) -> dict:
    """Test accuracies and median training seconds per epoch of one variant over the seeds."""
    runs = [run(recipe(checkpoint, seed, setting), f"kd-{_label(setting)}-seed{seed}")
            for seed in SEEDS]
    seconds = [r["stages"]["compressed"]["train_seconds_per_epoch"] for r in runs]
    accuracy = [r["test_acc"] for r in runs]
    return {"temperature": setting and setting[0], "alpha": setting and setting[1],
            "test_acc": accuracy, "mean_test_acc": statistics.mean(accuracy),
            "train_seconds_per_epoch": seconds, "median_seconds": statistics.median(seconds),
            "parameters": runs[0]["parameters"], "macs": runs[0]["macs"]}


def step_seconds(checkpoint: str, batch: int = 128) -> dict[str, float]:
    """Median seconds of one training step of the compacted student, without and with the
    teacher forward of the ``Distiller`` the callback uses, interleaved in one process."""
    teacher = create_model("resnet20", num_classes=10, in_channels=1, image_size=28)
    load_weights(teacher, checkpoint)
    student = copy.deepcopy(teacher)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    pruner = Pruner(student, PruningConfig("channel", 0.5, "l1"), inputs[:2])
    pruner.update()
    pruner.compact()
    student.train()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9)
    distiller = Distiller(teacher, student, DistillationConfig(temperature=4.0, alpha=0.5))

    def step(distil: bool) -> float:
        start = time.perf_counter()
        if distil:
            with distiller.capture():
                logits = student(inputs)
            loss = distiller(F.cross_entropy(logits, labels))
        else:
            loss = F.cross_entropy(student(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(STEP_REPEATS + 3):
        for distil in (False, True):
            seconds = step(distil)
            if repeat >= 3:  # warm-up
                times[distil].append(seconds)
    distiller.close()
    plain, with_teacher = (statistics.median(times[d]) for d in (False, True))
    return {"without_kd": plain, "with_kd": with_teacher, "ratio": with_teacher / plain,
            "repeats": STEP_REPEATS, "batch": batch, "torch_threads": torch.get_num_threads()}


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
        _row(f"KD T={v['temperature']:g}, alpha={v['alpha']:g}", v,
             f" | {v['kd_gain_points']:+.2f} | {v['time_ratio']:.2f}x") for v in variants]
    table = ("| 50 % channels, ResNet-20, Fashion-MNIST | " + " | ".join(f"seed {s}" for s in SEEDS)
             + " | Mean | Training s/epoch | KD gain (points) | Time vs without KD |\n|"
             + " --- |" * (len(SEEDS) + 5) + "\n" + "\n".join(rows) + "\n\n"
             f"Dense teacher: {dense['test_acc']:.2%}. Targets: a KD gain above 0 and at most "
             f"{TIME_LIMIT}x the time per epoch. Side by side in one process (medians of "
             f"{STEP_REPEATS} interleaved steps, batch {steps['batch']}, "
             f"{steps['torch_threads']} threads), a training step of the compressed student "
             f"takes {steps['without_kd'] * 1e3:.1f} ms without and {steps['with_kd'] * 1e3:.1f} "
             f"ms with the teacher forward: {steps['ratio']:.2f}x. "
             f"Compressed: {plain['parameters']:,} parameters, "
             f"{plain['macs']:,} MACs (dense {dense['parameters']:,}, {dense['macs']:,}).\n")
    write_result("distillation", data, table)


def _row(name: str, variant: dict, extra: str = " | | ") -> str:
    return (f"| {name} | " + " | ".join(f"{a:.2%}" for a in variant["test_acc"])
            + f" | {variant['mean_test_acc']:.2%} | {variant['median_seconds']:.1f}{extra} |")


if __name__ == "__main__":
    main()
