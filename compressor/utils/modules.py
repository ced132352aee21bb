"""Looking up and replacing submodules by dotted attribute path; the module a captured graph
node came from."""

from __future__ import annotations

from typing import Any

from torch import nn

from compressor.errors import UnknownNameError

__all__ = ["get_submodule", "set_submodule", "count_parameters", "innermost_module_path"]


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """Return ``root``'s submodule at dotted ``path`` (``""`` is ``root`` itself).

    Raises:
        UnknownNameError: no submodule has that path; the message lists the closest ones.
    """
    if not path:
        return root
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in root.named_modules() if name]
        raise UnknownNameError("submodule", path, names) from None


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (which must exist) with ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(root, parent_path)
    get_submodule(parent, name)
    setattr(parent, name, module)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def innermost_module_path(node: Any) -> str | None:
    """Dotted path of the innermost module that ran a ``torch.export`` / ``torch.fx`` graph node,
    from its ``nn_module_stack`` (``""``: the root; ``None``: not recorded)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    return str(list(stack.values())[-1][0]).removeprefix("L['self'].")
