"""Turning ``torch.export`` / ``torch.onnx.export`` failures into short messages that name the
failing op and PyTorch module, with a hint on what to do."""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from compressor.errors import CaptureError
from compressor.utils.modules import innermost_module

__all__ = ["FailureInfo", "diagnose_failure", "failing_module", "capture_error", "export_program"]

_NO_FUNCTION = re.compile(
    r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>")
_NODE = re.compile(r"Error when translating node %(\S+) : .*?target=([\w.:]+)", re.S)
_CALL = re.compile(r"The following call raised this error:\s*\n"
                   r"\s*(File \"[^\"]+\", line \d+, in \w+)\s*\n\s*(.+)")
_SUMMARY = re.compile(r"## Exception summary\s*\n\s*<class '([^']+)'>: (.+)")


@dataclass(frozen=True)
class FailureInfo:
    """What could be recovered about an export failure."""

    stage: str  # "capture" (torch.export) or "translate" (ATen -> ONNX)
    reason: str
    op: str | None = None
    node: str | None = None
    location: str | None = None
    module: str | None = None
    module_type: str | None = None

    def where(self) -> str:
        """``op `x` (node %n) in module `a.b` (Cls) at File ...`` — whatever is known."""
        parts = []
        if self.op:
            parts.append(f"op `{self.op}`" + (f" (node %{self.node})" if self.node else ""))
        if self.module is not None:
            name = self.module or "<root>"
            kind = f" ({self.module_type})" if self.module_type else ""
            parts.append(f"in module `{name}`{kind}")
        if self.location:
            parts.append(f"at {self.location}")
        return " ".join(parts)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def failing_module(error: BaseException, model: nn.Module) -> tuple[str, str] | None:
    """The innermost submodule of ``model`` whose ``forward`` is on the failure's traceback,
    as ``(dotted path, class name)`` (``""`` is ``model`` itself)."""
    names = {id(module): name for name, module in model.named_modules()}
    found = None
    for exc in _chain(error):
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                found = (names[id(owner)], type(owner).__name__)
    return found


def _module_of_node(model: nn.Module, example_inputs: tuple, node: str, op: str | None
                    ) -> tuple[str, str] | None:
    """The module that called graph node ``node`` (or the first call of ``op``), from the
    ``nn_module_stack`` of a fresh ``torch.export`` capture."""
    import torch

    try:
        program = torch.export.export(model, example_inputs, strict=False)
    except Exception:  # noqa: BLE001 - best effort: the caller reports the original failure
        return None
    for graph_node in program.graph.nodes:
        if graph_node.name == node or (op and str(graph_node.target).endswith(op)):
            found = innermost_module(graph_node)
            if found is not None:
                return found
    return None


def diagnose_failure(error: BaseException, model: nn.Module,
                     example_inputs: tuple | None = None) -> FailureInfo:
    """Recover the failing op, graph node, source location and module of an export failure.

    Args:
        error: What ``torch.export.export`` or ``torch.onnx.export`` raised.
        model: The model being exported.
        example_inputs: Its inputs; when given, an ONNX translation failure is located in the
            PyTorch module tree by capturing the model once more.
    """
    text = "\n".join(str(exc) for exc in _chain(error))
    op = node = location = None
    if match := _NO_FUNCTION.search(text):
        op = f"{match.group(1)}.{match.group(2)}"
    if match := _NODE.search(text):
        node = match.group(1)
        op = op or match.group(2).removeprefix("torch.ops.")
    if match := _CALL.search(text):
        location = f"{match.group(1)}: {match.group(2).strip()}"
    if match := _SUMMARY.search(text):
        reason = f"{match.group(1).rpartition('.')[2]}: {match.group(2).strip()}"
    else:
        innermost = list(_chain(error))[-1]
        lines = str(innermost).strip().splitlines()
        reason = f"{type(innermost).__name__}: {lines[0] if lines else ''}"
    stage = "translate" if (op or node) else "capture"
    module = failing_module(error, model) if stage == "capture" else None
    if module is None and stage == "translate" and example_inputs is not None and node:
        module = _module_of_node(model, example_inputs, node, op)
    return FailureInfo(stage, reason, op, node, location,
                       module[0] if module else None, module[1] if module else None)


def capture_error(error: BaseException, model: nn.Module, purpose: str, hints: str) -> CaptureError:
    """A :class:`~compressor.errors.CaptureError` for a failed ``torch.export`` capture of
    ``model``: the reason, the source line and module it failed in, and ``hints`` (where
    ``{module}`` stands for the failing module)."""
    info = diagnose_failure(error, model)
    where = info.where()
    culprit = f"`{info.module}`" if info.module else "the failing module"
    return CaptureError(f"torch.export cannot capture {type(model).__name__} for {purpose}: "
                        f"{info.reason}" + (f" ({where})" if where else "") + ". "
                        + hints.replace("{module}", culprit))


def export_program(model: nn.Module, args: tuple[Any, ...], purpose: str, hints: str,
                   dynamic_shapes: Any = None) -> Any:
    """``torch.export.export(model, args, strict=False)``, the one capture every part uses.

    Raises:
        CaptureError: the capture failed (see :func:`capture_error`).
    """
    import torch

    try:
        return torch.export.export(model, args, strict=False, dynamic_shapes=dynamic_shapes)
    except Exception as error:  # noqa: BLE001 - torch.export raises many unrelated types
        raise capture_error(error, model, purpose, hints) from error
