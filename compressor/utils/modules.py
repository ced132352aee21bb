"""Looking up and replacing submodules by dotted attribute path; the module a captured graph
node came from."""

from __future__ import annotations

from typing import Any

from torch import nn

from compressor.errors import UnknownNameError

__all__ = ["module_stack", "innermost_module", "get_submodule", "set_submodule", "count_parameters",
           "innermost_module_path"]


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


def module_stack(node: Any) -> list[tuple[str, str, str]]:
    """Every module enclosing a ``torch.export`` / ``torch.fx`` graph node, outermost first, as
    ``(key, dotted path, type name)``; the key tells repeated calls of one module apart. The
    only reader of ``nn_module_stack`` (empty when not recorded)."""
    stack = getattr(node, "meta", {}).get("nn_module_stack") or {}
    entries = []
    for key, (path, kind) in stack.items():
        type_name = kind if isinstance(kind, str) else getattr(kind, "__name__", "")
        entries.append((str(key), str(path).removeprefix("L['self']."),
                        type_name.rpartition(".")[2]))
    return entries


def innermost_module(node: Any) -> tuple[str, str] | None:
    """``(dotted path, type name)`` of the innermost module that ran ``node`` (``None``: not
    recorded; ``""`` is the root)."""
    stack = module_stack(node)
    return stack[-1][1:] if stack else None


def innermost_module_path(node: Any) -> str | None:
    """Dotted path of the innermost module that ran a graph node (``""``: the root; ``None``:
    not recorded)."""
    found = innermost_module(node)
    return found[0] if found else None
