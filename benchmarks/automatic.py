"""Latency budgets met by automatic allocation, measured on the exported files.

For each model and budget, ``plan_compression`` (sensitivity curves, the ONNX Runtime latency
table of this machine, the greedy allocator, candidates checked on the real file) chooses the
kept channels of every group for ``{"latency_speedup": B}`` at batch 32 in int8; the model is
then compacted to the plan, quantized (post-training: latency does not depend on the values) and
exported, and the file is timed side by side with the dense fp32 file at batch 32 and batch 1
(ONNX Runtime at its default optimisation level, 1 intra-op thread, medians of interleaved
runs). Random weights and random data: only latency is measured here. A budget that channel
pruning alone cannot reach reports the best achievable value instead.

Run: ``python benchmarks/automatic.py`` (about 5 minutes). Writes
``benchmarks/results/automatic.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import write_result

from compressor.automatic import BudgetError, compact_copy, plan_compression
from compressor.automatic.latency import export_deployed
from compressor.export import compare_onnx
from compressor.models import create_model
from compressor.pruning import Pruner, PruningConfig
from compressor.utils.tables import markdown_table

CASES = [("resnet20", (1, 28, 28), 2.0), ("resnet20", (1, 28, 28), 3.0),
         ("resnet18", (3, 32, 32), 5.0), ("resnet18", (3, 32, 32), 10.0),
         ("mobilenetv2", (1, 28, 28), 3.0)]


def batches(shape: tuple[int, ...], count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(32, *shape, generator=generator),
             torch.randint(0, 10, (32,), generator=generator)) for _ in range(count)]


def model_for(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=shape[0], image_size=shape[1]).train()
    with torch.no_grad():  # batch-norm statistics of random batches
        for inputs, _ in batches(shape):
            model(inputs)
    return model.eval()


def one_case(name: str, shape: tuple[int, ...], speedup: float, repeats: int) -> dict:
    model = model_for(name, shape)
    data = batches(shape)
    config = PruningConfig(granularity="channel", allocation="auto",
                           budget={"latency_speedup": speedup, "batch": 32})
    pruner = Pruner(model, config, data[0][0][:2])
    start = time.perf_counter()
    try:
        plan = plan_compression(pruner, data, config.budget, precision="int8")
    except BudgetError as error:
        best = float(str(error).split("reach ")[1].split("x")[0])
        return {"model": name, "budget": speedup, "met": False, "best_predicted": best,
                "plan_seconds": time.perf_counter() - start, "error": str(error)}
    seconds = time.perf_counter() - start
    example = data[0][0][:2]
    with tempfile.TemporaryDirectory() as folder:
        files = {"dense fp32": export_deployed(model, example, "fp32", Path(folder), "dense"),
                 "automatic int8": export_deployed(compact_copy(model, plan.kept, example),
                                                   example, "int8", Path(folder), "auto",
                                                   [x for x, _ in data])}
        bench = compare_onnx({k: str(v) for k, v in files.items()}, baseline="dense fp32",
                             batch_sizes=(1, 32), repeats=repeats)
    measured = next(e for e in bench.entries if e.name == "automatic int8").speedup
    last = plan.checks[-1]
    return {"model": name, "budget": speedup, "met": True, "plan": plan.to_dict(),
            "plan_seconds": seconds, "measured_b32": measured[32], "measured_b1": measured[1],
            "predicted": plan.predicted["speedup"],
            "prediction_error": plan.predicted["latency_ms"] / last["measured_ms"] - 1.0,
            "checks": len(plan.checks), "channel_step": plan.channel_step}


def table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        if not row["met"]:
            lines.append([row["model"], f"{row['budget']:g}x", "not reachable: best "
                          f"{row['best_predicted']:.2f}x predicted", "", "", "", "", "", "",
                          f"{row['plan_seconds']:.0f} s"])
            continue
        miss = row["measured_b32"] / row["budget"] - 1.0
        kept = row["plan"]["kept"]
        blocks = sum(1 for unit, k in kept.items() if unit.startswith("block:") and k == 0)
        channels = [(k, row["plan"]["sizes"][u]) for u, k in kept.items()
                    if u.startswith("channel:")]
        kept_share = sum(k for k, _ in channels) / sum(n for _, n in channels)
        lines.append([row["model"], f"{row['budget']:g}x", f"{row['measured_b32']:.2f}x",
                      f"{miss:+.1%}", f"{row['measured_b1']:.2f}x",
                      f"{row['prediction_error']:+.1%}", str(row["channel_step"]),
                      f"{kept_share:.0%}", str(blocks), f"{row['plan_seconds']:.0f} s"])
    return markdown_table(["Model", "Budget (b32)", "Measured b32", "Miss", "Measured b1",
                           "Table prediction error", "Channel step", "Channels kept",
                           "Blocks removed", "Plan time"], lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows = [one_case(name, shape, speedup, args.repeats) for name, shape, speedup in CASES]
    write_result("automatic", {"rows": rows}, table(rows) + "\n")


if __name__ == "__main__":
    main()
