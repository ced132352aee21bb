"""Knowledge distillation for a 50 %-channel-pruned ResNet-20 on Fashion-MNIST.

From the dense ResNet-20 of the ``fashion-mnist-baseline`` recipe, half of every group of
coupled channels is removed (one-shot, L1, compacted at the end of the first epoch) and the
smaller network is fine-tuned for 6 epochs, with and without distillation from the dense model
(``Distillation(teacher="self", temperature=TEMPERATURE, alpha=ALPHA)``: the teacher is the
model before compression). Everything else is identical; each variant runs with seeds 0 and 1. Reported: test
accuracy (mean of the seeds) and the median training time per epoch (the teacher forward is the
only extra work).

Run: ``python benchmarks/distillation.py`` (about 45 minutes on 2 cores, plus the baseline if
missing). Writes ``benchmarks/results/distillation.{json,md}``.
"""

from __future__ import annotations

import statistics

from _common import dense_baseline, run, write_result

SEEDS = (0, 1)
EPOCHS = 6
TIME_LIMIT = 1.5
TEMPERATURE = 4.0
ALPHA = 0.5


def recipe(checkpoint: str, seed: int, distil: bool) -> dict:
    spec = {
        "name": f"bench-kd-{'on' if distil else 'off'}-{seed}", "seed": seed,
        "model": {"name": "resnet20", "checkpoint": checkpoint},
        "data": {"name": "fashion-mnist", "batch_size": 128, "augment": True, "seed": seed},
        "train": {"epochs": EPOCHS, "optimizer": {"name": "sgd", "lr": 0.03},
                  "scheduler": {"name": "cosine"}},
        "pruning": [{"granularity": "channel", "sparsity": 0.5, "criterion": "l1",
                     "schedule": "one-shot", "start_epoch": 0}],
    }
    if distil:
        spec["distillation"] = {"teacher": "self", "temperature": TEMPERATURE, "alpha": ALPHA}
    return spec


def main() -> None:
    dense = dense_baseline()
    runs = {(distil, seed): run(recipe(dense["checkpoint"], seed, distil),
                                f"kd-T{TEMPERATURE:g}-a{ALPHA:g}-seed{seed}" if distil
                                else f"kd-off-seed{seed}")
            for seed in SEEDS for distil in (False, True)}
    accuracy = {d: [runs[(d, s)]["test_acc"] for s in SEEDS] for d in (False, True)}
    seconds = {d: [runs[(d, s)]["stages"]["compressed"]["train_seconds_per_epoch"] for s in SEEDS]
               for d in (False, True)}
    mean = {d: statistics.mean(v) for d, v in accuracy.items()}
    time_ratio = statistics.median(seconds[True]) / statistics.median(seconds[False])
    data = {"dense_test_acc": dense["test_acc"], "seeds": list(SEEDS), "epochs": EPOCHS,
            "temperature": TEMPERATURE, "alpha": ALPHA,
            "test_acc": {"without_kd": accuracy[False], "with_kd": accuracy[True]},
            "mean_test_acc": {"without_kd": mean[False], "with_kd": mean[True]},
            "kd_gain_points": (mean[True] - mean[False]) * 100,
            "train_seconds_per_epoch": {"without_kd": seconds[False], "with_kd": seconds[True]},
            "time_ratio": time_ratio, "time_limit": TIME_LIMIT,
            "meets_targets": mean[True] > mean[False] and time_ratio <= TIME_LIMIT,
            "parameters": runs[(True, 0)]["parameters"], "macs": runs[(True, 0)]["macs"],
            "dense_parameters": dense["parameters"], "dense_macs": dense["macs"]}
    rows = [f"| 50 % channels, {f'with KD (T={TEMPERATURE:g}, alpha={ALPHA:g})' if d else 'without KD'} | "
            + " | ".join(f"{a:.2%}" for a in accuracy[d]) + f" | {mean[d]:.2%} | "
            f"{statistics.median(seconds[d]):.1f} |" for d in (False, True)]
    table = ("| ResNet-20 on Fashion-MNIST | " + " | ".join(f"seed {s}" for s in SEEDS)
             + " | Mean | Training s/epoch |\n|" + " --- |" * (len(SEEDS) + 3) + "\n"
             + f"| dense teacher | {dense['test_acc']:.2%} |" + " |" * len(SEEDS) + "\n"
             + "\n".join(rows) + "\n\n"
             f"KD gain: {data['kd_gain_points']:+.2f} points; time per epoch with KD: "
             f"{time_ratio:.2f}x without (limit {TIME_LIMIT}x). Compressed: "
             f"{data['parameters']:,} parameters, {data['macs']:,} MACs (dense "
             f"{data['dense_parameters']:,}, {data['dense_macs']:,}).\n")
    write_result("distillation", data, table)


if __name__ == "__main__":
    main()
