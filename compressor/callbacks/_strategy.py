"""Strategy plumbing shared by callbacks that replace the student's parameters."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.nn.parallel import DistributedDataParallel

__all__ = ["rewrap_distributed"]


def rewrap_distributed(trainer: pl.Trainer) -> bool:
    """Re-create the DistributedDataParallel wrapper after parameters were replaced (it holds
    references to the old ones). Returns whether a wrapper was rebuilt."""
    strategy = trainer.strategy
    if not isinstance(getattr(strategy, "model", None), DistributedDataParallel):
        return False
    strategy.model = strategy._setup_model(strategy.lightning_module)  # noqa: SLF001
    register = getattr(strategy, "_register_ddp_hooks", None)
    if register is not None:
        register()
    return True
