"""Optimizer and learning-rate schedule construction from small validated configs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field

from compressor.utils.config import Config

__all__ = ["OptimizerConfig", "SchedulerConfig", "build_optimizer", "build_scheduler"]


class OptimizerConfig(Config):
    """Optimizer settings. ``sgd`` uses momentum (Nesterov by default); ``adamw`` uses
    decoupled weight decay."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)


class SchedulerConfig(Config):
    """Learning-rate schedule per optimizer step: linear warm-up, then ``cosine`` decay to
    ``min_lr_ratio * lr``, ``step`` decay (x0.1 at each milestone epoch) or ``constant``."""

    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    milestones: tuple[int, ...] = ()


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """Create the optimizer described by ``config`` over ``params``."""
    params = [p for p in params if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0,
                               weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` implementing ``config`` over ``epochs * steps_per_epoch`` steps."""
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.name == "constant":
            return 1.0
        if config.name == "step":
            epoch = step // max(1, steps_per_epoch)
            return 0.1 ** sum(epoch >= m for m in config.milestones)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
