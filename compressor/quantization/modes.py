"""Train/eval mode of ordinary modules and of ``torch.export``-ed graph modules.

An exported graph module (what PT2E preparation and conversion return) does not change
behaviour through ``.train()``/``.eval()``: its batch-norm and dropout ops are baked into the
graph. torchao rewrites those ops with ``move_exported_model_to_train``/``..._to_eval``; these
helpers pick the right mechanism for any module, so callers need not care which kind they hold.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import nn

from compressor.utils.modes import record_modes, restore_modes

__all__ = ["is_exported_model", "is_training", "set_training", "mark_training",
           "route_train_eval", "eval_mode"]

# torchao records the mode of an exported model under this attribute (absent = train mode).
_EXPORTED_TRAINING_ATTR = "_exported_training"
# ``meta`` keys (``GraphModule`` deep copies keep ``meta`` but drop other attributes): a mirror
# of the graph's mode and the function behind ``.train()`` / ``.eval()``.
_MODE_KEY = "compressor_training"
_SWITCH_KEY = "compressor_mode_switch"


def is_exported_model(model: nn.Module) -> bool:
    """True for graph modules produced by ``torch.export`` (and PT2E prepare/convert)."""
    return isinstance(model, torch.fx.GraphModule) and any(
        "val" in node.meta for node in model.graph.nodes)


def is_training(model: nn.Module) -> bool:
    """The mode ``model`` currently computes in (for exported models, the graph's mode)."""
    if is_exported_model(model):
        return bool(getattr(model, _EXPORTED_TRAINING_ATTR, True))
    return model.training


def set_training(model: nn.Module, training: bool) -> nn.Module:
    """Switch ``model`` to train or eval mode.

    For exported graph modules the batch-norm and dropout ops of the graph are rewritten (as
    torchao's ``move_exported_model_to_train``/``_to_eval`` do) and ``.training`` flags follow;
    for other modules this is ``model.train(training)``.
    """
    if not is_exported_model(model):
        return model.train(training)
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    if training:
        move_exported_model_to_train(model)
    else:
        move_exported_model_to_eval(model)
    return _record(model, training)


def _record(model: nn.Module, training: bool) -> nn.Module:
    setattr(model, _EXPORTED_TRAINING_ATTR, training)
    cast(torch.fx.GraphModule, model).meta[_MODE_KEY] = training
    for module in model.modules():
        module.training = training
    return model


def mark_training(model: nn.Module, training: bool) -> nn.Module:
    """Record that an exported graph module's graph already computes in train (or eval) mode,
    e.g. right after capturing it in that mode, so that later switches rewrite only when needed
    (each rewrite re-traces torchao's patterns and costs seconds)."""
    return _record(model, training) if is_exported_model(model) else model


def route_train_eval(model: torch.fx.GraphModule,
                     switch: Callable[[torch.fx.GraphModule, bool], Any]) -> None:
    """Make ``model.train(mode)`` / ``model.eval()`` call ``switch(model, mode)`` (exported
    models otherwise refuse them or only flip flags), also on deep copies of ``model``."""
    model.meta[_SWITCH_KEY] = switch
    _install_switch(model)
    if _after_deepcopy not in model._deepcopy_hooks:
        model._register_deepcopy_hook(_after_deepcopy)


def _install_switch(model: torch.fx.GraphModule) -> None:
    switch = model.meta[_SWITCH_KEY]

    def train(self: torch.fx.GraphModule, mode: bool = True) -> Any:
        return switch(self, mode)

    def eval(self: torch.fx.GraphModule) -> Any:  # noqa: A001 - the nn.Module method name
        return switch(self, False)

    model.train = types.MethodType(train, model)  # type: ignore[method-assign]
    model.eval = types.MethodType(eval, model)  # type: ignore[method-assign]


def _switch(model: nn.Module, training: bool) -> None:
    """Change an exported model's mode through its routed switch (which may keep extra state,
    such as frozen batch norm) or, without one, :func:`set_training`."""
    switch = cast(torch.fx.GraphModule, model).meta.get(_SWITCH_KEY)
    if switch is not None:
        switch(model, training)
    else:
        set_training(model, training)


def _after_deepcopy(copy: torch.fx.GraphModule) -> None:
    """Give a deep copy the mode attribute and train/eval routing of its original."""
    if _MODE_KEY in copy.meta:
        setattr(copy, _EXPORTED_TRAINING_ATTR, copy.meta[_MODE_KEY])
    if _SWITCH_KEY in copy.meta:
        _install_switch(copy)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` (and every exported graph module inside it) in eval mode,
    then restore each module's previous mode (through ``train()`` for ordinary modules)."""
    modes = record_modes(model)
    exported = [module for module in model.modules() if is_exported_model(module)]
    switched = [module for module in exported if is_training(module)]
    for module in switched:
        _switch(module, False)
    if not exported:
        model.eval()
    for module in modes:  # graph modules only mirror their graph's mode in these flags
        module.training = False
    try:
        yield model
    finally:
        for module in switched:
            _switch(module, True)
        if exported:
            for module, training in modes.items():
                module.training = training
        else:
            restore_modes(model, modes)
