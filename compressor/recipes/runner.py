"""``run_recipe``: build everything a recipe describes, train, evaluate and write the report.

A run has one or two stages: an optional ``baseline`` stage trains the dense model, then the
``train`` stage trains (and, with compression sections, compresses) it. Each stage writes its
checkpoints under ``<out>/<stage>/``; ``metrics.json`` and ``report.md`` summarise all stages.
"""

from __future__ import annotations

import copy
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
from compressor.pruning.budget import Budget
from compressor.pruning.report import sparsity_report
from compressor.recipes.report import print_report, render_markdown
from compressor.recipes.schema import ExportSpec, Recipe, TrainSpec, build_callbacks
from compressor.training.checkpoints import load_weights
from compressor.training.module import ClassificationModule
from compressor.utils.io import atomic_write_json, atomic_write_text

__all__ = ["RunResult", "run_recipe", "build_model"]


@dataclass
class RunResult:
    """What a run produced: its output folder, metrics and final checkpoint."""

    out_dir: Path
    metrics: dict[str, Any]
    checkpoint: Path | None


def build_model(recipe: Recipe, datamodule: ClassificationDataModule) -> torch.nn.Module:
    """The recipe's model, shaped for ``datamodule``'s data (weights from ``model.checkpoint``)."""
    channels, height, _ = datamodule.input_shape
    model = create_model(recipe.model.name, num_classes=datamodule.num_classes,
                         in_channels=channels, image_size=height, **recipe.model.options)
    if recipe.model.checkpoint is not None:
        load_weights(model, recipe.model.checkpoint)
    return model


def run_recipe(recipe: Recipe, out_dir: str | Path | None = None, progress: bool = True,
               report: bool = True) -> RunResult:
    """Train (and compress) what ``recipe`` describes; write ``metrics.json``, ``report.md``
    and checkpoints under ``out_dir`` (default ``runs/<recipe name>``).

    Every input is validated (data present, model options, callback settings) before training
    starts.
    """
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe.name
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    datamodule = create_datamodule(recipe.data.name, **recipe.data.options)
    model = build_model(recipe, datamodule)
    callbacks = build_callbacks(recipe)  # from the sections validated when the recipe loaded
    stages: dict[str, dict[str, Any]] = {}
    checkpoint: Path | None = None
    if recipe.baseline is not None:
        stages["baseline"], checkpoint, _ = _run_stage(recipe, "baseline", recipe.baseline, model,
                                                       datamodule, [], out, progress)
    compare_dense = recipe.export is not None and recipe.export.compare_dense
    dense = copy.deepcopy(model) if recipe.compresses and compare_dense else None
    name = "compressed" if recipe.compresses else "dense"
    stages[name], checkpoint, final = _run_stage(recipe, name, recipe.train, model, datamodule,
                                                 callbacks, out, progress)
    deployment = None
    plan = next((c.plan for c in callbacks if getattr(c, "plan", None) is not None), None)
    if recipe.export is not None:
        deployment = deploy(final, dense, datamodule, _with_budget_batch(recipe.export, plan),
                            out)
        stages[name]["onnx_test_acc"] = deployment["accuracy"]["model"]
        if "dense" in deployment["accuracy"]:
            stages.get("baseline", {})["onnx_test_acc"] = deployment["accuracy"]["dense"]
    metrics = _summary(recipe, stages, checkpoint)
    if deployment is not None:
        metrics["deployment"] = deployment
    if plan is not None:
        metrics["automatic"] = budget_outcome(plan, final, dense, deployment, datamodule)
    atomic_write_json(out / "metrics.json", metrics)
    title = f"Run report: {recipe.name}"
    markdown = render_markdown(title, stages)
    if deployment is not None:
        markdown += "\n## ONNX Runtime\n\n" + deployment["title"] + "\n\n" + deployment["table"]
    if plan is not None:
        markdown += "\n## Automatic allocation\n\n" + plan.to_markdown() + "\n\n" + \
            metrics["automatic"]["summary"] + "\n"
        plan.plot(out / "compression_plan.png")
    atomic_write_text(out / "report.md", markdown)
    if report:
        print_report(title, stages)
        if deployment is not None:
            print(f"\nONNX Runtime ({deployment['title']}):\n{deployment['table']}")
        if plan is not None:
            print("\n" + metrics["automatic"]["summary"])
    return RunResult(out, metrics, checkpoint)


def _run_stage(recipe: Recipe, stage: str, train: TrainSpec, model: torch.nn.Module,
               datamodule: ClassificationDataModule, callbacks: list[pl.Callback], out: Path,
               progress: bool) -> tuple[dict[str, Any], Path | None, torch.nn.Module]:
    """One ``Trainer.fit`` + test; returns the stage metrics, its final checkpoint and the
    trained model as the stage left it (e.g. converted to int8 by QAT)."""
    folder = out / stage
    module = ClassificationModule(model, datamodule.num_classes, datamodule.input_shape,
                                  optimizer=train.optimizer, scheduler=train.scheduler,
                                  label_smoothing=train.label_smoothing)
    run_info = RunInfo({"recipe": recipe.model_dump(mode="json"), "stage": stage,
                        "input_shape": list(datamodule.input_shape),
                        "num_classes": datamodule.num_classes})
    timer = EpochTimer()
    compressing = bool(callbacks)
    saver = _checkpointer(folder / "checkpoints", compressing)
    shown, progress_bar = progress_callbacks(progress)
    trainer = pl.Trainer(
        max_epochs=train.epochs, accelerator="cpu", devices=1,
        callbacks=[*callbacks, run_info, timer, saver, *shown], enable_progress_bar=progress_bar,
        enable_model_summary=False, logger=CSVLogger(folder, name="logs", version=""),
        accumulate_grad_batches=train.accumulate_grad_batches,
        limit_train_batches=train.limit_train_batches,
        limit_val_batches=train.limit_val_batches, default_root_dir=folder,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    # Compression changes the architecture during fit: evaluate the final model (its checkpointer
    # keeps only the latest epoch). A dense run evaluates and keeps its best checkpoint.
    saved = saver.best_model_path or saver.last_model_path
    final = Path(saved) if saved else None
    tested = trainer.test(module, datamodule=datamodule,
                          ckpt_path=None if compressing or final is None else str(final),
                          verbose=False)[0]
    example = torch.zeros(1, *datamodule.input_shape)
    metrics: dict[str, Any] = {
        "stage": stage,
        "epochs": trainer.current_epoch,
        "test_acc": float(tested["test/acc"]),
        "test_loss": float(tested["test/loss"]),
        **model_size(model, example),
        "weight_sparsity": sparsity_report(model).global_sparsity,
        **timer.summary(),
        "fit_seconds": fit_seconds,
        "checkpoint": str(final),
    }
    if saver.best_model_score is not None and not compressing:
        metrics["best_val_acc"] = float(saver.best_model_score)
    return metrics, final, module.model


def _checkpointer(folder: Path, compressing: bool) -> ModelCheckpoint:
    """Checkpoints of a stage: a dense run keeps its best epoch by validation accuracy plus the
    last one; a compressing run (whose architecture changes during fit) keeps the latest epoch
    as ``last.ckpt``, written at every epoch end so an interrupted run can resume."""
    if compressing:
        return ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                               enable_version_counter=False)
    return ModelCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max",
                           save_last=True, enable_version_counter=False, save_top_k=1)


def deploy(model: torch.nn.Module, dense: torch.nn.Module | None,
           datamodule: ClassificationDataModule, spec: ExportSpec, out: Path) -> dict[str, Any]:
    """Export ``model`` (and ``dense`` for comparison) to ONNX, verify them, measure their
    test accuracy in ONNX Runtime and time them side by side."""
    from compressor.export import compare_onnx, export_onnx, onnx_accuracy

    test = datamodule.dataset("test")
    example, parity = test.images[:2].clone(), test.images[:64].clone()
    models = {"model": model} if dense is None else {"model": model, "dense": dense}
    files = {key: out / f"{key}.onnx" for key in models}
    if spec.path is not None:
        files["model"] = spec.path
    reports = {key: export_onnx(models[key], path, example, parity_inputs=parity,
                                latency_batches=(), verify=spec.verify, parity=spec.parity,
                                metadata=spec.metadata, dynamic_batch=spec.dynamic_batch,
                                opset=spec.opset) for key, path in files.items()}
    accuracy = {key: onnx_accuracy(path, datamodule.test_dataloader())
                for key, path in files.items()}
    bench = compare_onnx({key: str(path) for key, path in files.items()},
                         baseline="dense" if dense is not None else None,
                         batch_sizes=list(spec.batch_sizes), repeats=spec.latency_repeats)
    return {"files": {k: str(v) for k, v in files.items()},
            "reports": {k: r.to_dict() for k, r in reports.items()},
            "accuracy": accuracy, "bench": bench.to_dict(), "title": bench.title(),
            "table": bench.to_markdown()}


def _with_budget_batch(spec: ExportSpec, plan: Any) -> ExportSpec:
    """The export settings, timing the batch size of a latency budget too."""
    budget = Budget.from_dict(plan.budget) if plan is not None else None
    if budget is None or not budget.is_latency:
        return spec
    batch = budget.batch
    return spec.model_copy(update={"batch_sizes": tuple(sorted({*spec.batch_sizes, batch}))})


def budget_outcome(plan: Any, final: torch.nn.Module, dense: torch.nn.Module | None,
                   deployment: dict[str, Any] | None,
                   datamodule: ClassificationDataModule) -> dict[str, Any]:
    """Budget against what was measured: the exported file's ONNX Runtime speed-up over the
    dense fp32 file (latency budgets) or the final model's MACs and parameters; a miss larger
    than the budget's tolerance is a warning with the numbers."""
    import warnings

    budget = Budget.from_dict(plan.budget)
    measured: float | None = None
    if budget.is_latency and deployment is not None:
        entry = next(m for m in deployment["bench"]["models"] if m["name"] == "model")
        speedups, latency = entry["speedup_vs_baseline"], entry["latency"].get(str(budget.batch))
        if budget.kind == "latency_speedup" and str(budget.batch) in speedups:
            measured = float(speedups[str(budget.batch)])
        elif budget.kind == "latency_ms" and latency is not None:
            measured = float(latency["median_ms"])
    elif not budget.is_latency and dense is not None:
        example = torch.zeros(1, *datamodule.input_shape)
        key = "macs" if budget.kind == "macs" else "parameters"
        measured = model_size(final, example)[key] / model_size(dense, example)[key]
    if measured is None:
        summary = f"Budget {plan.budget}: not measured (export with compare_dense to check it)."
        return {"budget": plan.budget, "measured": None, "summary": summary, "plan": plan.to_dict()}
    worse = measured < budget.value if budget.kind == "latency_speedup" else measured > budget.value
    miss = abs(measured / budget.value - 1.0)
    summary = (f"Budget {budget.kind} {budget.value:g}: measured {measured:.3g} "
               f"({'missed' if worse else 'met'}, {miss:.1%} from the budget).")
    if worse and miss > budget.tolerance:
        warnings.warn(summary, stacklevel=2)
    return {"budget": plan.budget, "measured": measured, "met": not worse, "summary": summary,
            "plan": plan.to_dict()}


def _summary(recipe: Recipe, stages: dict[str, dict[str, Any]], checkpoint: Path | None
             ) -> dict[str, Any]:
    final = list(stages.values())[-1]
    return {
        "recipe": recipe.name,
        "model": recipe.model.name,
        "data": recipe.data.name,
        "seed": recipe.seed,
        **{k: final[k] for k in ("test_acc", "onnx_test_acc", "test_loss", "parameters", "macs")
           if k in final},
        "checkpoint": str(checkpoint) if checkpoint else None,
        "stages": stages,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": {"compressor": compressor.__version__, "torch": torch.__version__,
                     "pytorch_lightning": pl.__version__, "python": platform.python_version()},
        "recipe_config": recipe.model_dump(mode="json"),
    }
