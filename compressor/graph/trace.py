"""Capturing a model's forward pass as an ATen-level graph with ``torch.export`` (non-strict).

Non-strict export runs the model's Python code, so shape-dependent control flow works, and
records every operation with the module it came from (``nn_module_stack``) and every parameter
by its qualified name.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree

from compressor.utils.diagnose import capture_error, export_program
from compressor.utils.inputs import as_args
from compressor.utils.modes import refresh_mode_state, temporary_mode
from compressor.utils.modules import innermost_module

__all__ = ["TracedModel", "trace_model", "as_args", "module_of"]

_PURPOSE = "structured pruning"
_HINTS = ("Structured pruning and quantization need a traceable forward pass: avoid "
          "data-dependent Python control flow, or apply them to a traceable submodule.")


@dataclass
class TracedModel:
    """A captured forward pass.

    Attributes:
        graph: The ATen graph.
        tensors: Placeholder name -> qualified name of the parameter, buffer or constant.
        inputs: Placeholder names of the user inputs.
    """

    graph: fx.Graph
    tensors: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)


def module_of(node: fx.Node) -> tuple[str, str]:
    """``(qualified name, type name)`` of the innermost module that ran ``node`` (``("", "")``
    when unknown)."""
    return innermost_module(node) or ("", "")


def trace_model(model: nn.Module, example_inputs: Any) -> TracedModel:
    """Capture ``model`` (in eval mode, so batch-norm and dropout are deterministic).

    Raises:
        CaptureError: ``torch.export`` failed; the message names the failing operation or module.
    """
    args = as_args(example_inputs)
    refresh_mode_state(model)  # eval-mode caches from earlier forwards would be baked in
    with temporary_mode(model, False), torch.no_grad(), warnings.catch_warnings():
        # Eval-mode caches (timm's attention biases) are assigned while tracing; torch.export
        # puts them back afterwards, so its warning about them says nothing to the user.
        warnings.filterwarnings("ignore", message="The tensor attributes? .* (was|were) assigned during")
        try:
            program = torch.export.export(model, args, strict=False)
        except Exception as error:  # noqa: BLE001 - retried once, then re-raised with context
            opaque = _opaque_output_types(model, args)
            if not opaque:
                raise capture_error(error, model, _PURPOSE, _HINTS) from error
            with _left_out(opaque):
                program = export_program(model, args, _PURPOSE, _HINTS)
    traced = TracedModel(program.graph_module.graph)
    own = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    own |= {name for name, _ in model.named_buffers(remove_duplicate=False)}
    for spec in program.graph_signature.input_specs:
        name = spec.arg.name if hasattr(spec.arg, "name") else str(spec.arg)
        if spec.target is not None and spec.target in own:
            traced.tensors[name] = spec.target
        elif spec.kind.name == "USER_INPUT":
            traced.inputs.append(name)
    return traced


def _opaque_output_types(model: nn.Module, args: tuple[Any, ...]) -> list[type]:
    """Types in ``model``'s output that ``torch.export`` cannot flatten (e.g. a key-value cache
    object of a language model), found by running it once."""
    leaves = _pytree.tree_leaves(model(*args))
    plain = (torch.Tensor, int, float, bool, str, type(None))
    return list(dict.fromkeys(type(leaf) for leaf in leaves if not isinstance(leaf, plain)))


@contextlib.contextmanager
def _left_out(types: list[type]) -> Iterator[None]:
    """Let ``torch.export`` treat objects of ``types`` in the output as empty containers, so
    what they hold is left out of the captured outputs (the channels they carry are then not
    protected as model outputs: a pruned language model returns a smaller cache)."""
    registered = []
    try:
        for cls in types:
            _pytree.register_pytree_node(cls, lambda obj: ([], None), lambda children, _: None)
            registered.append(cls)
        yield
    finally:
        for cls in registered:
            _pytree._deregister_pytree_node(cls)  # noqa: SLF001 - no public inverse


def example_shapes(args: Sequence[Any]) -> list[tuple[int, ...]]:
    """Shapes of the tensor arguments (for messages)."""
    return [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
