"""Residual blocks that can be removed whole (layer pruning).

A module qualifies when its output is its input plus one or more residual branches
(``x + f(x)``, optionally followed by a ReLU of a non-negative input, as in post-activation
ResNets), with the same shape in and out. Zeroing the last parameterised layer of every branch
turns the block into an identity; compaction then replaces it by ``nn.Identity``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from compressor.graph.propagate import op_name, shape_of
from compressor.graph.trace import TracedModel, as_args, trace_model
from compressor.utils.modules import module_stack

__all__ = ["ResidualBlock", "find_residual_blocks"]

_TRANSPARENT = {"dropout", "clone", "contiguous", "alias", "detach", "identity"}
_PARAMETERISED = {"conv1d", "conv2d", "conv3d", "linear", "batch_norm", "layer_norm", "group_norm",
                  "_native_batch_norm_legit_no_training", "rms_norm"}


@dataclass(frozen=True)
class ResidualBlock:
    """A removable block.

    Attributes:
        path: Qualified name of the module.
        branch_ends: Tensors to zero so every residual branch outputs zero.
        parameters: Every parameter of the block (for importance scores).
    """

    path: str
    branch_ends: tuple[str, ...]
    parameters: tuple[str, ...]


def find_residual_blocks(model: nn.Module, example_inputs: Any,
                         traced: TracedModel | None = None, validate: bool = True
                         ) -> list[ResidualBlock]:
    """Residual blocks of ``model`` that can be replaced by the identity, outermost first.

    Nested candidates inside an accepted block are skipped. With ``validate``, each block is
    checked on a copy: zeroing its branches must give the same output as replacing it.
    """
    traced = traced or trace_model(model, example_inputs)
    scopes: dict[str, list[fx.Node]] = {}
    for node in traced.graph.nodes:
        for key, path, _ in module_stack(node):
            if path:
                scopes.setdefault(key, []).append(node)
    calls: dict[str, list[str]] = {}
    for key, nodes in scopes.items():
        path = next(p for k, p, _ in module_stack(nodes[0]) if k == key)
        calls.setdefault(path, []).append(key)
    blocks: list[ResidualBlock] = []
    for path, keys in sorted(calls.items(), key=lambda item: item[0].count(".")):
        if len(keys) != 1 or any(path.startswith(b.path + ".") for b in blocks):
            continue
        ends = _branch_ends(traced, scopes[keys[0]])
        if not ends:
            continue
        module = model.get_submodule(path)
        names = tuple(f"{path}.{name}" for name, _ in module.named_parameters())
        block = ResidualBlock(path, tuple(ends), names)
        if not validate or _removal_is_exact(model, block, example_inputs):
            blocks.append(block)
    return blocks


def _branch_ends(traced: TracedModel, nodes: list[fx.Node]) -> list[str] | None:
    inside = set(nodes)
    inputs = {arg for node in nodes for arg in node.all_input_nodes
              if arg not in inside and arg.name not in traced.tensors}
    outputs = [node for node in nodes if any(user not in inside for user in node.users)]
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    (source,), output = tuple(inputs), outputs[0]
    if shape_of(source) != shape_of(output):
        return None
    node = output
    if op_name(node) in ("relu", "relu_"):
        node = node.args[0]
    branches = _residual_branches(node, source, inside)
    if not branches:
        return None
    ends: list[str] = []
    for branch in branches:
        tensors = _parameterised_end(traced, branch, inside)
        if tensors is None:
            return None
        ends.extend(tensors)
    return ends


def _residual_branches(node: Any, source: fx.Node, inside: set[fx.Node]) -> list[fx.Node] | None:
    """Branches ``b_i`` such that ``node == source + b_1 + ... + b_k`` (in any nesting)."""
    if node is source:
        return []
    if not isinstance(node, fx.Node) or node not in inside or op_name(node) != "add":
        return None
    if len(node.args) < 2 or len(node.kwargs) or not all(isinstance(a, fx.Node) for a in node.args[:2]):
        return None
    first, second = node.args[0], node.args[1]
    for skip, branch in ((first, second), (second, first)):
        found = _residual_branches(skip, source, inside)
        if found is not None and branch in inside:
            return found + [branch]
    return None


def _parameterised_end(traced: TracedModel, node: fx.Node, inside: set[fx.Node]) -> list[str] | None:
    """The weight/bias names of the last parameterised op producing ``node``."""
    while op_name(node) in _TRANSPARENT:
        node = node.args[0]
    if node not in inside or op_name(node) not in _PARAMETERISED:
        return None
    names = [traced.tensors[arg.name] for arg in node.all_input_nodes
             if arg.name in traced.tensors]
    params = [name for name in names if not name.endswith(("running_mean", "running_var",
                                                           "num_batches_tracked"))]
    return params or None


def _removal_is_exact(model: nn.Module, block: ResidualBlock, example_inputs: Any) -> bool:
    args = as_args(example_inputs)
    masked, removed = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
    parameters = dict(masked.named_parameters())
    from compressor.utils.modules import set_submodule

    with torch.no_grad():
        for name in block.branch_ends:
            parameters[name].zero_()
        set_submodule(removed, block.path, nn.Identity())
        try:
            expected, actual = masked(*args), removed(*args)
        except Exception:  # noqa: BLE001 - such a block is simply not removable
            return False
    if not isinstance(expected, torch.Tensor) or expected.shape != actual.shape:
        return False
    return bool((expected - actual).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max())))
