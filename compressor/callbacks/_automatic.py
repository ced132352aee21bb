"""Automatic allocation inside a fit: the plan is made once, on rank 0, at the first pruning
event, and shared with every rank."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import nn

from compressor.automatic import CompressionPlan, evaluation_batches, plan_compression
from compressor.callbacks._inputs import train_loader
from compressor.callbacks._lightning import rewrap_distributed
from compressor.callbacks.state import existing_state
from compressor.errors import ConfigError
from compressor.graph.surgery import CompactionStep, apply_step
from compressor.pruning import Budget, Pruner
from compressor.utils.optim import replace_parameters

__all__ = ["make_plan", "deployed_precision", "plan_folder", "remove_blocks", "unit_ratios"]

log = logging.getLogger(__name__)


def deployed_precision(budget: Budget, pl_module: pl.LightningModule) -> str:
    """``int8`` when a QAT callback of the same fit will quantize the student (it registered
    a graph capture in the shared compression state), else ``fp32``; or what the budget says."""
    if budget.precision != "auto":
        return budget.precision
    state = existing_state(pl_module)
    return "int8" if state is not None and state.captures else "fp32"


def _batches(trainer: pl.Trainer, pl_module: pl.LightningModule, count: int) -> list[Any]:
    datamodule = getattr(trainer, "datamodule", None)
    loader = datamodule.val_dataloader() if datamodule is not None and \
        type(datamodule).val_dataloader is not pl.LightningDataModule.val_dataloader else None
    loader = loader if loader is not None else train_loader(trainer)
    if loader is None:
        raise ConfigError("allocation='auto' measures sensitivity on validation (or training) "
                          "batches, but this fit has no data loader.")
    batches = evaluation_batches(loader, count)
    return [pl_module.transfer_batch_to_device(batch, pl_module.device, 0) for batch in batches]


def make_plan(trainer: pl.Trainer, pl_module: pl.LightningModule, pruner: Pruner) -> CompressionPlan:
    """The plan of ``pruner``'s budget: computed on global rank 0, broadcast to the others (so
    every rank prunes the same channels), written next to the logs."""
    budget = pruner.config.budget
    assert budget is not None
    folder = plan_folder(trainer)  # on every rank: Trainer.log_dir is a collective under DDP
    data: dict[str, Any] | None = None
    if trainer.is_global_zero:
        plan = plan_compression(pruner, _batches(trainer, pl_module, max(budget.max_batches, 4)),
                                budget, deployed_precision(budget, pl_module))
        data = plan.to_dict()
    data = trainer.strategy.broadcast(data, src=0)
    plan = CompressionPlan.from_dict(data)
    if trainer.is_global_zero:
        plan.save(folder / "compression_plan.json")
        plan.plot(folder / "compression_plan.png")
        log.info("Automatic allocation for %s:\n%s", budget.settings(), plan.to_markdown())
    return plan


def plan_folder(trainer: pl.Trainer) -> Path:
    """Where the plan is written: the trainer's log folder, else its root folder."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def remove_blocks(trainer: pl.Trainer, student: nn.Module, paths: list[str]) -> None:
    """Replace the residual blocks at ``paths`` by the identity (the optimizers drop their
    parameters; a DDP wrapper is rebuilt)."""
    result = apply_step(student, CompactionStep(identity=paths))
    for optimizer in trainer.optimizers:
        replace_parameters(optimizer, result.replaced, result.removed)
    rewrap_distributed(trainer)


def unit_ratios(plan: CompressionPlan, pruner: Pruner) -> dict[str, float]:
    """The plan's channel ratios for ``pruner``'s units, matched by group name (the pruner may
    have been rebuilt after blocks were removed, which renumbers the groups)."""
    kept = plan.kept_by_name()
    ratios = {}
    for unit in pruner.units:
        group = pruner.unit_set.groups[unit]
        ratios[unit] = 1.0 - min(kept.get(group.name, len(group)), len(group)) / len(group)
    return ratios
