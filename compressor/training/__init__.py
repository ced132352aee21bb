"""Reference Lightning training pieces: the ``ClassificationModule`` and optimizer configs."""

from compressor.training.module import ClassificationModule
from compressor.training.optim import (
           OptimizerConfig,
           SchedulerConfig,
           build_optimizer,
           build_scheduler,
)

__all__ = ["ClassificationModule", "OptimizerConfig", "SchedulerConfig", "build_optimizer",
           "build_scheduler"]
