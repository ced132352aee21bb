"""Changing and restoring the train/eval mode of a user's module through ``train()``.

User modules may override ``train()`` (timm's attention layers clear a cache of attention biases
there when they go back to training), so a mode change that only flips ``.training`` flags can
leave state behind that the user's code relies on being reset. Every temporary mode change in
compressor goes through these helpers: the modes are restored by calling ``train(mode)``, from
the outermost module inwards, on every module whose mode differs from the recorded one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["ModuleModes", "record_modes", "restore_modes", "temporary_mode", "refresh_mode_state"]

ModuleModes = dict[nn.Module, bool]


def record_modes(model: nn.Module) -> ModuleModes:
    """The ``training`` flag of ``model`` and of every submodule."""
    return {module: module.training for module in model.modules()}


def restore_modes(model: nn.Module, modes: ModuleModes) -> None:
    """Put every module of ``model`` back in its recorded mode through its own ``train()``.

    Modules are visited outermost first (``model.modules()`` order), so a parent's recursive
    ``train()`` runs before a child that must end in another mode is switched on its own.
    Modules that were not recorded (added since) keep the mode their parent gives them.
    """
    for module in model.modules():
        wanted = modes.get(module)
        if wanted is not None and module.training != wanted:
            module.train(wanted)


@contextlib.contextmanager
def temporary_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run a block with ``model.train(training)``; restore every module's mode afterwards."""
    modes = record_modes(model)
    model.train(training)
    try:
        yield model
    finally:
        restore_modes(model, modes)


def refresh_mode_state(model: nn.Module) -> None:
    """Let every module drop state it derived from its weights for eval mode (timm's attention
    caches, for one, are cleared by their ``train()``): call ``train(True)`` on ``model``, then
    restore every module's mode. Used after weights change shape or value in place."""
    modes = record_modes(model)
    model.train(True)
    restore_modes(model, modes)
