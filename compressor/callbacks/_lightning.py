"""Every use of Lightning's private API, in one place, for the Lightning versions checked here.

The compression callbacks need a few things Lightning has no public hook for: the checkpoint
being restored (to rebuild a compacted or QAT-prepared student before its weights load), the
loaders passed to ``fit()``, re-wrapping DDP after parameters were replaced, the process start
method, a hook around the strategy's ``training_step`` (distillation adds its loss there, so the
user's LightningModule keeps its own ``training_step``) and running ``training_step`` outside
the loop without its ``self.log`` calls reaching the real results. Each helper below is the only
place its private name is touched; :func:`check_version` warns once when the installed Lightning
is outside the range these were verified on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch.nn.parallel import DistributedDataParallel

__all__ = ["VERIFIED", "check_version", "loaded_checkpoint", "fit_loader", "start_method",
           "rewrap_distributed", "wrap_training_step", "run_training_step_unlogged"]

#: Lightning versions (``[first, last)`` as ``(major, minor)``) the private uses were checked on.
VERIFIED = ((2, 4), (2, 7))

_warned: list[bool] = []


def check_version(version: str = pl.__version__) -> bool:
    """Whether ``version`` is in :data:`VERIFIED`; warns once per process when it is not."""
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    supported = VERIFIED[0] <= parts < VERIFIED[1]
    if not supported and not _warned:
        _warned.append(True)
        warnings.warn(f"pytorch_lightning {version} is outside the versions the compression "
                      f"callbacks were verified with ({VERIFIED[0][0]}.{VERIFIED[0][1]} to "
                      f"before {VERIFIED[1][0]}.{VERIFIED[1][1]}); resume, DDP and distillation "
                      "rely on Lightning internals that may have changed.", stacklevel=2)
    return supported


def loaded_checkpoint(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The checkpoint ``fit(ckpt_path=...)`` is restoring right now (else ``None``)."""
    connector = getattr(trainer, "_checkpoint_connector", None)
    checkpoint = getattr(connector, "_loaded_checkpoint", None)
    return checkpoint or None


def fit_loader(trainer: pl.Trainer) -> Any:
    """The training loader passed to ``fit()`` directly (not through a datamodule), if any."""
    source = trainer.fit_loop._data_source  # noqa: SLF001
    return source.dataloader() if source.is_defined() else None


def start_method(trainer: pl.Trainer) -> str:
    """How the strategy starts its processes (``"popen"`` for ``ddp``, ``"spawn"`` …)."""
    return str(getattr(trainer.strategy, "_start_method", "popen"))


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


def wrap_training_step(trainer: pl.Trainer, around: Callable[[Callable[[], Any]], Any]) -> Callable[[], None]:
    """Run every training step of ``trainer`` as ``around(step)``, where ``step()`` is
    the strategy's own step (the user's ``training_step`` inside DDP's forward); the result is
    what Lightning uses as the step's output. Returns a function that undoes it.

    The strategy instance is wrapped, not the LightningModule, so calling
    ``pl_module.training_step`` directly still runs only the user's code.
    """
    strategy = trainer.strategy
    original = strategy.training_step
    previous = vars(strategy).get("training_step")
    active = [True]

    @functools.wraps(original)
    def training_step(*args: Any, **kwargs: Any) -> Any:
        if not active[0]:
            return original(*args, **kwargs)
        return around(lambda: original(*args, **kwargs))

    def restore() -> None:
        active[0] = False
        if vars(strategy).get("training_step") is not training_step:
            return  # wrapped again on top: ours now only passes through
        if previous is None:
            del strategy.training_step
        else:
            strategy.training_step = previous  # type: ignore[method-assign]

    strategy.training_step = training_step  # type: ignore[method-assign]
    return restore


def run_training_step_unlogged(trainer: pl.Trainer, batch: Any, batch_idx: int) -> Any:
    """Call the LightningModule's ``training_step`` the way the loop does (its hook name set),
    with whatever it logs going to a throw-away result collection (e.g. scoring calibration
    batches before training: those are not training steps)."""
    from pytorch_lightning.trainer import call
    from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultCollection

    loop = trainer.fit_loop.epoch_loop
    connector = trainer._logger_connector  # noqa: SLF001
    saved_results, saved_fx = loop._results, connector._current_fx  # noqa: SLF001
    loop._results = _ResultCollection(training=True)  # noqa: SLF001
    try:
        return call._call_lightning_module_hook(trainer, "training_step", batch, batch_idx)  # noqa: SLF001
    finally:
        loop._results, connector._current_fx = saved_results, saved_fx  # noqa: SLF001
