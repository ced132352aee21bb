"""``run_recipe``: build everything a recipe describes, train, evaluate and write the report."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

import compressor
from compressor.callbacks.progress import progress_callbacks
from compressor.callbacks.run_info import RunInfo
from compressor.callbacks.timing import EpochTimer
from compressor.data.datamodules import ClassificationDataModule, create_datamodule
from compressor.graph.macs import model_size
from compressor.models.registry import create_model
from compressor.recipes.report import print_report, render_markdown
from compressor.recipes.schema import Recipe
from compressor.training.checkpoints import load_weights
from compressor.training.module import ClassificationModule
from compressor.utils.io import atomic_write_json, atomic_write_text

__all__ = ["RunResult", "run_recipe", "build_module"]


@dataclass
class RunResult:
    """What a run produced: its output folder, metrics and best checkpoint."""

    out_dir: Path
    metrics: dict[str, Any]
    checkpoint: Path | None


def build_module(recipe: Recipe, datamodule: ClassificationDataModule) -> ClassificationModule:
    """The ``ClassificationModule`` of ``recipe``'s model, shaped for ``datamodule``'s data."""
    channels, height, _ = datamodule.input_shape
    model = create_model(recipe.model.name, num_classes=datamodule.num_classes,
                         in_channels=channels, image_size=height, **recipe.model.options)
    if recipe.model.checkpoint is not None:
        load_weights(model, recipe.model.checkpoint)
    return ClassificationModule(model, datamodule.num_classes, datamodule.input_shape,
                                optimizer=recipe.train.optimizer, scheduler=recipe.train.scheduler,
                                label_smoothing=recipe.train.label_smoothing)


def run_recipe(recipe: Recipe, out_dir: str | Path | None = None, progress: bool = True,
               report: bool = True) -> RunResult:
    """Train and evaluate what ``recipe`` describes; write ``metrics.json``, ``report.md``
    and checkpoints under ``out_dir`` (default ``runs/<recipe name>``).

    Every input is validated (data present, model options, ...) before training starts.
    """
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe.name
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    datamodule = create_datamodule(recipe.data.name, **recipe.data.options)
    module = build_module(recipe, datamodule)

    run_info = RunInfo({"recipe": recipe.model_dump(mode="json"),
                        "input_shape": list(datamodule.input_shape),
                        "num_classes": datamodule.num_classes})
    timer = EpochTimer()
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/acc",
                                 mode="max", save_last=True, enable_version_counter=False)
    shown, progress_bar = progress_callbacks(progress)
    trainer = pl.Trainer(
        max_epochs=recipe.train.epochs, accelerator="cpu", devices=1,
        callbacks=[run_info, timer, checkpoint, *shown], enable_progress_bar=progress_bar,
        enable_model_summary=False, logger=CSVLogger(out, name="logs", version=""),
        accumulate_grad_batches=recipe.train.accumulate_grad_batches,
        limit_train_batches=recipe.train.limit_train_batches,
        limit_val_batches=recipe.train.limit_val_batches, default_root_dir=out,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    tested = trainer.test(module, datamodule=datamodule, ckpt_path=str(best) if best else None,
                          verbose=False)[0]

    metrics: dict[str, Any] = {
        "recipe": recipe.name,
        "model": recipe.model.name,
        "data": recipe.data.name,
        "seed": recipe.seed,
        "epochs": trainer.current_epoch,
        "test_acc": float(tested["test/acc"]),
        "test_loss": float(tested["test/loss"]),
        "best_val_acc": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        **model_size(module.model, torch.zeros(1, *datamodule.input_shape)),
        **timer.summary(),
        "fit_seconds": fit_seconds,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "checkpoint": str(best) if best else None,
        "versions": {"compressor": compressor.__version__, "torch": torch.__version__,
                     "pytorch_lightning": pl.__version__, "python": platform.python_version()},
        "recipe_config": recipe.model_dump(mode="json"),
    }
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", render_markdown(f"Run report: {recipe.name}", metrics))
    if report:
        print_report(f"Run report: {recipe.name}", metrics)
    return RunResult(out, metrics, best)
