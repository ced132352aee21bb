"""``compressor analyze``: the sensitivity curves and the latency table of a recipe's model,
without training (JSON + PNG).

The model is the recipe's (with ``model.checkpoint`` if it names one: sensitivity means most on
trained weights); the channel groups are those of its first ``pruning`` section (its ``ignore``
patterns and budget settings), or every channel group when it has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compressor.automatic import (
    analyze_sensitivity,
    build_cost_model,
    evaluation_batches,
    latency_table,
)
from compressor.automatic.plan import plain_model, removable_blocks
from compressor.data.datamodules import create_datamodule
from compressor.pruning import Budget, Pruner, PruningConfig
from compressor.recipes.runner import build_model
from compressor.recipes.schema import Recipe

__all__ = ["analyze"]


def _setting(recipe: Recipe) -> tuple[PruningConfig, Budget]:
    section = recipe.pruning[0] if recipe.pruning else None
    budget = section.budget if section is not None and section.budget is not None else \
        Budget(latency_speedup=2.0)
    ignore = section.ignore if section is not None else ()
    return PruningConfig(granularity="channel", sparsity=0.5, ignore=ignore), budget


def analyze(recipe: Recipe, what: str, out: str | Path, precision: str = "int8") -> dict[str, Any]:
    """Write ``<out>/sensitivity.{json,png}`` or ``<out>/latency.{json,png}``; returns the
    JSON written."""
    torch.manual_seed(recipe.seed)
    datamodule = create_datamodule(recipe.data.name, **recipe.data.options)
    datamodule.setup("fit")
    model = build_model(recipe, datamodule).eval()
    config, budget = _setting(recipe)
    batches = evaluation_batches(datamodule.val_dataloader(), budget.max_batches)
    example = batches[0][0][:2]
    pruner = Pruner(model, config, example)
    folder = Path(out)
    if what == "sensitivity":
        blocks = removable_blocks(model, example, config.ignore) if budget.blocks else []
        result = analyze_sensitivity(pruner, batches, ratios=budget.ratios, blocks=blocks)
        result.save(folder / "sensitivity.json")
        result.plot(folder / "sensitivity.png")
        return result.to_dict()
    plain = plain_model(pruner)
    costs = build_cost_model(plain, pruner.unit_set.groups, example[:1])
    table = latency_table(plain, costs, example, [x for x, _ in batches], precision,
                          budget.batch, budget.threads, config.ignore)
    from compressor.utils.io import atomic_write_json

    atomic_write_json(folder / "latency.json", table.to_dict())
    table.plot(folder / "latency.png")
    return table.to_dict()
