"""Finding the model to compress (the "student") inside any LightningModule."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from compressor.errors import ConfigError
from compressor.utils.modules import get_submodule, set_submodule

__all__ = ["find_student_path", "get_student", "set_student"]


def _holds_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def find_student_path(pl_module: pl.LightningModule, path: str | None = None) -> str:
    """The attribute path of the student inside ``pl_module``.

    With ``path=None`` the student is chosen automatically: the only direct child that holds
    parameters (metrics and other parameter-free children are ignored). ``path=""`` means the
    LightningModule itself.

    Raises:
        ConfigError: the automatic choice is ambiguous or impossible; the message lists the
            candidates and how to choose.
        UnknownNameError: ``path`` names no submodule.
    """
    if path is not None:
        get_submodule(pl_module, path)
        return path
    candidates = [name for name, child in pl_module.named_children() if _holds_parameters(child)]
    own = [name for name, _ in pl_module.named_parameters(recurse=False)]
    if len(candidates) == 1 and not own:
        return candidates[0]
    if not candidates and own:
        return ""
    if not candidates:
        raise ConfigError(f"{type(pl_module).__name__} holds no parameters: there is nothing to "
                          "compress.")
    listed = ", ".join(repr(c) for c in candidates + ([""] if own else []))
    raise ConfigError(
        f"Cannot choose the model to compress automatically: {type(pl_module).__name__} has "
        f"several submodules with parameters ({listed}). Pass `student=` with the attribute path "
        "of the model to compress (\"\" for the whole LightningModule).")


def get_student(pl_module: pl.LightningModule, path: str) -> nn.Module:
    """The student module at ``path`` (``""`` is ``pl_module`` itself)."""
    return get_submodule(pl_module, path)


def set_student(pl_module: pl.LightningModule, path: str, module: nn.Module) -> None:
    """Replace the student at ``path`` with ``module`` (e.g. a compacted or QAT-prepared copy)."""
    if not path:
        raise ConfigError("The student is the whole LightningModule and cannot be replaced; "
                          "pass `student=` with the attribute path of a submodule.")
    set_submodule(pl_module, path, module)
