"""90 % unstructured sparsity on ResNet-20 / Fashion-MNIST against the dense baseline.

Starts from the dense ResNet-20 of the ``fashion-mnist-baseline`` recipe (trained first if
missing), prunes it to 90 % with a gradual cubic schedule (global magnitude ranking, first conv
and classifier dense) over 6 epochs and fine-tunes 2 more, then compares test accuracy on the
full 10k test set. Sparsity is counted from the weights' actual zeros.

Run: ``python benchmarks/pruning_accuracy.py`` (about 40 minutes on 2 cores, 20 if the baseline
exists). Writes ``benchmarks/results/pruning_accuracy.{json,md}``.
"""

from __future__ import annotations

import torch
from _common import dense_baseline, run, write_result

from compressor.pruning import sparsity_report
from compressor.recipes.restore import restore_model

TARGET_POINTS = 1.5


def main() -> None:
    dense = dense_baseline()
    recipe = {
        "name": "bench-unstructured-90", "seed": 0,
        "model": {"name": "resnet20", "checkpoint": dense["checkpoint"]},
        "data": {"name": "fashion-mnist", "batch_size": 128, "augment": True},
        "train": {"epochs": 8, "optimizer": {"name": "sgd", "lr": 0.02},
                  "scheduler": {"name": "cosine"}},
        "pruning": [{"granularity": "unstructured", "sparsity": 0.9, "criterion": "l1",
                     "allocation": "global", "schedule": "cubic", "start_epoch": 0,
                     "end_epoch": 5}],
    }
    pruned = run(recipe, "unstructured-90")
    model = restore_model(pruned["checkpoint"]).model
    report = sparsity_report(model, torch.zeros(1, 1, 28, 28))
    layers = report.layers[1:-1]  # first conv and classifier are protected (dense)
    pruned_sparsity = sum(layer.zeros for layer in layers) / sum(layer.numel for layer in layers)
    drop = (dense["test_acc"] - pruned["test_acc"]) * 100
    data = {"dense_test_acc": dense["test_acc"], "pruned_test_acc": pruned["test_acc"],
            "accuracy_drop_points": drop, "target_points": TARGET_POINTS,
            "meets_target": drop <= TARGET_POINTS,
            "sparsity_of_pruned_layers": pruned_sparsity,
            "sparsity_all_conv_linear": report.global_sparsity,
            "nonzero_parameters": report.nonzero_parameters, "parameters": report.parameters,
            "epochs": {"dense": dense["stages"]["dense"]["epochs"], "pruning": 8},
            "recipe": recipe}
    table = ("| Model | Test accuracy | Zero weights (pruned layers) | Zero weights (all conv/linear) "
             "| Non-zero parameters |\n| --- | --- | --- | --- | --- |\n"
             f"| ResNet-20 dense | {dense['test_acc']:.2%} | 0.0% | 0.0% | {report.parameters:,} |\n"
             f"| ResNet-20, 90% unstructured | {pruned['test_acc']:.2%} | {pruned_sparsity:.1%} | "
             f"{report.global_sparsity:.1%} | {report.nonzero_parameters:,} |\n\n"
             f"Accuracy drop: {drop:.2f} points (target: at most {TARGET_POINTS}).\n")
    write_result("pruning_accuracy", data, table)


if __name__ == "__main__":
    main()
