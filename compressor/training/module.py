"""``ClassificationModule``: the reference LightningModule used by the CLI, recipes and tests.

It wraps any ``nn.Module`` classifier. The compression callbacks never depend on it: they work
on any LightningModule.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from compressor.training.optim import (
    OptimizerConfig,
    SchedulerConfig,
    build_optimizer,
    build_scheduler,
)
from compressor.utils.checks import check_float, check_int

__all__ = ["ClassificationModule"]


class ClassificationModule(pl.LightningModule):
    """Cross-entropy training of an image classifier with accuracy metrics.

    Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc``.

    Args:
        model: Any classifier mapping ``(N, *input_shape)`` to ``(N, num_classes)`` logits.
        num_classes: Number of classes (for the accuracy metrics).
        input_shape: Shape of one input, e.g. ``(1, 28, 28)``; sets ``example_input_array``.
        optimizer: Optimizer settings (a config or a dict of its fields).
        scheduler: Learning-rate schedule (a config or a dict of its fields).
        label_smoothing: Label smoothing of the cross-entropy loss.
    """

    def __init__(self, model: nn.Module, num_classes: int, input_shape: tuple[int, ...],
                 optimizer: OptimizerConfig | dict[str, Any] | None = None,
                 scheduler: SchedulerConfig | dict[str, Any] | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.optimizer_config = OptimizerConfig.model_validate(optimizer or {})
        self.scheduler_config = SchedulerConfig.model_validate(scheduler or {})
        self.label_smoothing = check_float("label_smoothing", label_smoothing, 0.0, 1.0,
                                           high_inclusive=False)
        self.example_input_array = torch.zeros(2, *input_shape)
        metric = torchmetrics.classification.MulticlassAccuracy
        self.train_acc = metric(num_classes)
        self.val_acc = metric(num_classes)
        self.test_acc = metric(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str,
              metric: torchmetrics.Metric) -> torch.Tensor:
        inputs, labels = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        metric(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.optimizer_config)
        trainer = self._trainer
        if trainer is None or trainer.max_epochs is None or trainer.max_epochs < 1:
            return optimizer
        steps = max(1, int(trainer.estimated_stepping_batches) // trainer.max_epochs)
        scheduler = build_scheduler(optimizer, self.scheduler_config, steps, trainer.max_epochs)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
