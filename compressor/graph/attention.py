"""``nn.MultiheadAttention`` under channel and head removal.

PyTorch's module ties three widths together: the width of its input and output (``embed_dim``)
must equal ``num_heads * head_dim``. Removing heads, or channels of the residual stream around
it, breaks that tie, so a compacted module whose widths differ becomes a
:class:`CompactMultiheadAttention`: the same parameters and attributes, a subclass of
``nn.MultiheadAttention`` (``isinstance`` checks still hold), and a forward pass that computes
exactly what the original computes for the kept heads and channels.

The dependency graph treats the module as a black box (:func:`propagate_multihead_attention`):
input channels are the columns of ``in_proj_weight`` (shared by query, key and value), output
channels the rows of ``out_proj.weight``, and every head one removable unit (its query, key and
value rows and its columns of the output projection).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from compressor.graph.atoms import Slot
from compressor.graph.handlers import LayerHandler, register_handler
from compressor.graph.labels import fixed
from compressor.graph.rules.common import op_name, shape_of

if TYPE_CHECKING:
    from compressor.graph.propagate import Propagator

__all__ = ["CompactMultiheadAttention", "propagate_multihead_attention", "COMPACT_CLASSES"]


class CompactMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose ``embed_dim`` (input/output width) may differ from
    ``num_heads * head_dim`` (the width of queries, keys and values), as left by compaction.

    Supports what compaction keeps supported: packed input projections
    (``in_proj_weight``), ``batch_first`` either way, unbatched inputs, ``key_padding_mask``,
    2-D ``attn_mask`` (or 3-D with one mask per remaining head), ``is_causal``, dropout and
    attention weights (averaged over heads or not).
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1 if not self.batch_first else 0)
                                 for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        target, batch, _ = query.shape
        source = key.shape[0]
        inner = self.num_heads * self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.split(inner)
        b_q, b_k, b_v = (self.in_proj_bias.split(inner) if self.in_proj_bias is not None
                         else (None, None, None))
        q = self._heads(F.linear(query, w_q, b_q), target, batch)
        k = self._heads(F.linear(key, w_k, b_k), source, batch)
        v = self._heads(F.linear(value, w_v, b_v), source, batch)
        mask = self._mask(attn_mask, key_padding_mask, batch, target, source, q.dtype)
        dropout = self.dropout if self.training else 0.0
        causal = is_causal and mask is None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if causal:
                scores = scores.masked_fill(torch.ones(target, source, dtype=torch.bool,
                                                       device=q.device).triu(1), float("-inf"))
            if mask is not None:
                scores = scores + mask
            weights = F.dropout(scores.softmax(-1), dropout, self.training)
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=causal)
        out = out.permute(2, 0, 1, 3).reshape(target, batch, inner)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if unbatched:
            out = out.squeeze(1 if not self.batch_first else 0)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights

    def _heads(self, x: torch.Tensor, length: int, batch: int) -> torch.Tensor:
        """``(length, batch, heads * head_dim)`` -> ``(batch, heads, length, head_dim)``."""
        return x.view(length, batch, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _mask(self, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
              batch: int, target: int, source: int, dtype: torch.dtype) -> torch.Tensor | None:
        """One additive float mask broadcastable to ``(batch, heads, target, source)``."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, dtype)
            if mask.dim() == 3:
                if mask.shape[0] != batch * self.num_heads:
                    raise ValueError(
                        f"attn_mask holds {mask.shape[0]} masks, but this attention layer now "
                        f"has {self.num_heads} heads for a batch of {batch} (heads were removed "
                        "by compaction): pass one mask per remaining head, or a 2-D mask.")
                mask = mask.view(batch, self.num_heads, target, source)
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, dtype).view(batch, 1, 1, source)
            mask = padding if mask is None else mask + padding
        return mask


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (``True`` = masked out) as additive ``-inf``/``0``; floats unchanged."""
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


# Classes compaction may give a module, by the name recorded in a compaction history (a
# history names only these; it never imports anything).
COMPACT_CLASSES: dict[str, type[nn.Module]] = {
    "CompactMultiheadAttention": CompactMultiheadAttention}


def _update(module: nn.Module) -> dict[str, Any]:
    width = module.in_proj_weight.shape[1]
    inner = module.in_proj_weight.shape[0] // 3
    updates: dict[str, Any] = {"embed_dim": width, "kdim": width, "vdim": width,
                               "num_heads": inner // module.head_dim}
    if width != inner or isinstance(module, CompactMultiheadAttention):
        updates["__class__"] = "CompactMultiheadAttention"
    return updates


def _unsupported(module: nn.MultiheadAttention) -> str | None:
    if not module._qkv_same_embed_dim:  # noqa: SLF001 - the only record of separate projections
        return "separate query/key/value projections (kdim or vdim != embed_dim)"
    if module.bias_k is not None or module.add_zero_attn:
        return "add_bias_kv / add_zero_attn"
    return None


def propagate_multihead_attention(prop: Propagator, module: nn.Module, path: str,
                                  inputs: list[fx.Node], outputs: list[fx.Node]
                                  ) -> dict[fx.Node, Any]:
    """Channel labels through one call of an ``nn.MultiheadAttention`` (a black box).

    Args:
        prop: The running propagator.
        module: The attention module.
        path: Its qualified name.
        inputs: Tensors entering the call (query, key, value, masks), in any order.
        outputs: Nodes of the call used outside it.

    Returns:
        The labels of every node in ``outputs``.
    """
    first = outputs[0] if outputs else inputs[0]
    problem = _unsupported(module)
    if problem is not None:
        for arg in inputs:
            prop.poison(prop.labels(arg), first, f"nn.MultiheadAttention with {problem}")
        return {node: fixed(len(shape_of(node) or ())) for node in outputs}
    prefix = f"{path}." if path else ""
    weight, bias = f"{prefix}in_proj_weight", f"{prefix}in_proj_bias"
    out_weight, out_bias = f"{prefix}out_proj.weight", f"{prefix}out_proj.bias"
    width = module.in_proj_weight.shape[1]
    columns = prop.slot_atoms(weight, 1, first)
    rows = prop.slot_atoms(weight, 0, first)
    prop.result.producers.add(Slot(weight, 0))
    if module.in_proj_bias is not None:
        prop.uf.union_arrays(rows, prop.slot_atoms(bias, 0, first))
    for arg in inputs:
        shape = shape_of(arg) or ()
        value = arg.meta.get("val")
        if shape and shape[-1] == width and getattr(value, "is_floating_point", lambda: False)():
            prop.couple_index(columns, prop.labels(arg), len(shape) - 1, first,
                              "input feature is fixed")
        else:
            prop.poison(prop.labels(arg), first, "an attention mask carries channels")
    out_rows = prop.slot_atoms(out_weight, 0, first)
    out_columns = prop.slot_atoms(out_weight, 1, first)
    prop.result.producers.add(Slot(out_weight, 0))
    if module.out_proj.bias is not None:
        prop.uf.union_arrays(out_rows, prop.slot_atoms(out_bias, 0, first))
    inner, head_dim = len(rows) // 3, module.head_dim
    for head in range(inner // head_dim):
        span = slice(head * head_dim, (head + 1) * head_dim)
        members = np.concatenate([rows[part * inner:(part + 1) * inner][span]
                                  for part in range(3)] + [out_columns[span]])
        prop.uf.union_all(members)
        prop.result.head_atoms.update(int(a) for a in members)
    result = {}
    for node in outputs:
        shape = shape_of(node) or ()
        if shape and _comes_from(node, out_weight, prop):
            result[node] = prop.output(out_rows.reshape((1,) * (len(shape) - 1) + (-1,)))
        else:
            result[node] = fixed(len(shape))
    return result


_THROUGH = {"view", "reshape", "_unsafe_view", "transpose", "permute", "contiguous", "clone",
            "alias", "squeeze", "unsqueeze", "_to_copy", "dropout"}


def _comes_from(node: fx.Node, weight: str, prop: Propagator) -> bool:
    """Whether ``node`` is the output projection's result (through layout-only operations)."""
    while isinstance(node, fx.Node) and node.op == "call_function":
        if any(prop.tensor_name(arg) == weight for arg in node.all_input_nodes):
            return True
        if op_name(node) not in _THROUGH or not node.args:
            return False
        node = node.args[0]
    return False


register_handler(nn.MultiheadAttention, LayerHandler(update=_update,
                                                     propagate=propagate_multihead_attention))
