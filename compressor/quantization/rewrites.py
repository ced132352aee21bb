"""Rewrites of a captured graph before annotation, so that ONNX Runtime can run more of it with
integer kernels; each computes the same values (up to float rounding).

**Attention as explicit matrix products** (:func:`expand_attention`), so that the quantizer can
give ONNX Runtime integer kernels for ``q @ k^T`` and ``weights @ v``.
``torch.nn.functional.scaled_dot_product_attention`` is captured as one fused op: nothing inside
it can be annotated, and the ONNX exporter expands it with scalings between the inputs and the
matrix products, which keeps both of them in float. Before annotation, each such node of a
captured graph is replaced by the reference computation it stands for (the same values up to
float rounding): matmul, scaling, mask, softmax, dropout, matmul. The new nodes keep the module
stack of the node they replace, so ``keep_float`` patterns still match them.

**Linear layers on sequences as 2-D products** (:func:`flatten_linear_inputs`): the ONNX
exporter writes a linear layer on a ``(batch, tokens, features)`` input as ``MatMul`` + ``Add``,
which ONNX Runtime fuses only into ``MatMulIntegerToFloat`` (a float output, then the bias and
a new quantization in float). On a ``(batch * tokens, features)`` view it is one ``Gemm``, which
becomes a ``QGemm`` with its bias and output quantization inside the integer kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.utils import _pytree

__all__ = ["SDPA_OPS", "expand_attention", "flatten_linear_inputs"]

aten = torch.ops.aten

SDPA_OPS = frozenset({aten.scaled_dot_product_attention.default})
_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
_META_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack")


def expand_attention(model: GraphModule) -> int:
    """Replace every fused attention node of ``model``'s graph in place; return how many."""
    return _rewrite(model, lambda node: node.target in SDPA_OPS,
                    lambda emit, node: emit.attention(**_arguments(node)))


def flatten_linear_inputs(model: GraphModule) -> int:
    """View the input of every linear layer with more than two dimensions as a matrix, and its
    output back, in ``model``'s graph in place; return how many layers."""
    return _rewrite(model, lambda node: node.target is aten.linear.default
                    and node.args[0].meta["val"].dim() > 2, _flat_linear)


def _flat_linear(emit: _Emitter, node: Node) -> Node:
    activation, *rest = node.args
    shape = activation.meta["val"].shape
    leading = [size if isinstance(size, int) else emit(aten.sym_size.int, activation, dim)
               for dim, size in enumerate(shape[:-1])]
    flat = emit(aten.linear.default, emit(aten.view.default, activation, [-1, shape[-1]]), *rest)
    return emit(aten.view.default, flat, [*leading, node.meta["val"].shape[-1]])


def _rewrite(model: GraphModule, selects: Callable[[Node], bool],
             build: Callable[[_Emitter, Node], Node]) -> int:
    """Replace each ``call_function`` node that ``selects`` accepts by the nodes ``build``
    inserts before it (returning the replacement output); recompile; return how many."""
    nodes = [node for node in model.graph.nodes if node.op == "call_function" and selects(node)]
    for node in nodes:
        with model.graph.inserting_before(node):
            output = build(_Emitter(model, node), node)
        node.replace_all_uses_with(output)
        model.graph.erase_node(node)
    if nodes:
        model.graph.lint()
        model.recompile()
    return len(nodes)


def _arguments(node: Node) -> dict[str, Any]:
    values = dict(zip(_PARAMETERS, node.args))
    values.update(node.kwargs)
    return values


class _Emitter:
    """Inserts ATen nodes with the metadata (fake value, module stack) of ``source``."""

    def __init__(self, model: GraphModule, source: Node) -> None:
        self.graph = model.graph
        self.meta = {key: source.meta[key] for key in _META_KEYS if key in source.meta}

    def __call__(self, target: Any, *args: Any) -> Node:
        node = self.graph.call_function(target, tuple(args))
        node.meta.update(self.meta)
        fake_args = _pytree.tree_map_only(Node, lambda n: n.meta["val"], tuple(args))
        node.meta["val"] = target(*fake_args)
        return node

    def attention(self, query: Node, key: Node, value: Node, attn_mask: Node | None = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                  enable_gqa: bool = False) -> Node:
        heads, key_heads = query.meta["val"].size(-3), key.meta["val"].size(-3)
        if enable_gqa and key_heads != heads:
            key = self(aten.repeat_interleave.self_int, key, heads // key_heads, -3)
            value = self(aten.repeat_interleave.self_int, value, heads // key_heads, -3)
        factor = scale if scale is not None else 1.0 / math.sqrt(query.meta["val"].size(-1))
        scores = self(aten.matmul.default, query, self(aten.transpose.int, key, -2, -1))
        scores = self(aten.mul.Tensor, scores, factor)
        if is_causal:
            keep = self(aten.tril.default, self(aten.ones_like.default, scores))
            scores = self(aten.masked_fill.Scalar, scores, self(aten.eq.Scalar, keep, 0),
                          float("-inf"))
        if attn_mask is not None:
            if attn_mask.meta["val"].dtype == torch.bool:
                scores = self(aten.masked_fill.Scalar, scores,
                              self(aten.logical_not.default, attn_mask), float("-inf"))
            else:
                scores = self(aten.add.Tensor, scores, attn_mask)
        weights = self(aten.softmax.int, scores, -1)
        if dropout_p > 0.0:
            weights = self(aten.dropout.default, weights, dropout_p, True)
        return self(aten.matmul.default, weights, value)
