"""Running callback code on a checkpoint *before* Lightning loads its weights.

Lightning calls ``LightningModule.on_load_checkpoint(checkpoint)`` right before
``load_state_dict``; callbacks only see their state later. Compression callbacks that change
the architecture (compaction, QAT preparation) must replay those changes before the weights
load, so they register a hook here: the module's ``on_load_checkpoint`` is wrapped on the
instance (the user's own implementation still runs, last) and hooks run by priority, so the
result does not depend on the order of the callbacks list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl

__all__ = ["add_load_hook", "remove_load_hook", "COMPACTION_PRIORITY", "QUANTIZATION_PRIORITY"]

COMPACTION_PRIORITY = 10
QUANTIZATION_PRIORITY = 20

_HOOKS = "_compressor_load_hooks"

LoadHook = Callable[[dict[str, Any]], None]


def add_load_hook(pl_module: pl.LightningModule, owner: object, priority: int,
                  hook: LoadHook) -> None:
    """Call ``hook(checkpoint)`` before the weights of a checkpoint are loaded into
    ``pl_module`` (lower ``priority`` first). Re-adding for the same ``owner`` replaces it."""
    hooks: dict[int, tuple[int, LoadHook]] | None = vars(pl_module).get(_HOOKS)
    if hooks is None:
        hooks = {}
        vars(pl_module)[_HOOKS] = hooks
        original = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            for _, run in sorted(hooks.values(), key=lambda item: item[0]):
                run(checkpoint)
            original(checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint  # type: ignore[method-assign]
    hooks[id(owner)] = (priority, hook)


def remove_load_hook(pl_module: pl.LightningModule, owner: object) -> None:
    """Remove ``owner``'s hook; the original ``on_load_checkpoint`` returns with the last one."""
    hooks = vars(pl_module).get(_HOOKS)
    if not hooks:
        return
    hooks.pop(id(owner), None)
    if not hooks:
        vars(pl_module).pop(_HOOKS, None)
        vars(pl_module).pop("on_load_checkpoint", None)
