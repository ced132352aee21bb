"""Rules for operations that reduce or contract dimensions: reductions and pooling (forbidden over
channels), softmax-like ops along a dimension, matrix products and attention (contracted
channels are unioned; heads are unioned across q, k and v)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from torch import fx

from compressor.graph.atoms import Slot
from compressor.graph.labels import FIXED, broadcast_labels, canonical, fixed, right_align, varying_dims
from compressor.graph.rules.common import Labels, dims_arg, extent, norm_dim, op_name, shape_of

__all__ = ["ReductionRules"]


class ReductionRules:
    """Mixin of :class:`compressor.graph.propagate.Propagator` (uses its helpers)."""

    def reduction(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dims = dims_arg(node, 1, len(shape))
        keepdim = bool(node.args[2]) if len(node.args) > 2 and isinstance(node.args[2], bool) \
            else bool(node.kwargs.get("keepdim", False))
        if op_name(node) in ("linalg_vector_norm", "norm"):
            dims = dims_arg(node, 2, len(shape))
            keepdim = bool(node.args[3]) if len(node.args) > 3 else bool(node.kwargs.get("keepdim"))
        if varying_dims(source) & set(dims):
            self.poison(source, node, "reduces over channels")
        reduced = source
        for dim in sorted(dims, reverse=True):
            reduced = reduced.take([0], axis=dim) if keepdim else reduced.take(0, axis=dim)
        out_shape = shape_of(node)
        if out_shape is None:
            value = node.meta.get("val")
            return [self.output(reduced), None] if isinstance(value, (list, tuple)) else None
        return self.output(reduced.reshape([s if s == 1 or s == o else 1
                                            for s, o in zip(reduced.shape, out_shape)])
                           if reduced.ndim == len(out_shape) else fixed(len(out_shape)))

    def pool(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        ndim = len(shape_of(node.args[0]) or ())
        match = re.search(r"(\d)d", op_name(node))
        rank = int(match.group(1)) if match else 2
        spatial = set(range(ndim - rank, ndim))
        if varying_dims(source) & spatial:
            self.poison(source, node, "pools over labelled positions")
        out = source
        for dim in spatial:
            out = out.take([0], axis=dim)
        out = self.output(out)
        return [out, None] if isinstance(node.meta.get("val"), (list, tuple)) else out

    def along_dim(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        ndim = source.ndim
        dims = dims_arg(node, 1, ndim) if op_name(node) not in ("roll",) else dims_arg(node, 2, ndim)
        if op_name(node) in ("sort", "topk"):
            dims = [norm_dim(node.args[2] if len(node.args) > 2 else -1, ndim)]
        if varying_dims(source) & set(dims):
            self.poison(source, node, "mixes or reorders channels")
        value = node.meta.get("val")
        if isinstance(value, (list, tuple)):
            return [source, None]
        return source

    def matmul(self, node: fx.Node) -> Any:
        left_arg, right_arg = node.args[0], node.args[1]
        weight = self.tensor_name(right_arg)
        out_shape = shape_of(node)
        if out_shape is None:
            return None
        if weight is not None and len(self.tensor_shape(weight)) == 2:
            return self._transposed_linear(node, left_arg, weight, None, len(out_shape))
        if self.tensor_name(left_arg) is not None:
            return self.unknown(node, "matrix product with a parameter on the left")
        left, right = self.labels(left_arg), self.labels(right_arg)
        if left.ndim < 2 or right.ndim < 2:
            return self.unknown(node, "matrix-vector product")
        return self.output(self._matmul(node, left, right, len(out_shape)))

    def addmm(self, node: fx.Node) -> Any:
        """``bias + input @ weight`` (GPT-2's ``Conv1D``: a linear layer storing its weight as
        ``(in, out)``)."""
        bias_arg, left_arg, right_arg = node.args[:3]
        weight = self.tensor_name(right_arg)
        bias = self.tensor_name(bias_arg)
        if weight is None or len(self.tensor_shape(weight)) != 2 or node.kwargs:
            return self.unknown(node, "matrix product with a computed weight")
        return self._transposed_linear(node, left_arg, weight, bias, 2)

    def _transposed_linear(self, node: fx.Node, left_arg: Any, weight: str, bias: str | None,
                           ndim: int) -> Labels:
        source = self.labels(left_arg)
        in_atoms = self.slot_atoms(weight, 0, node)
        out_atoms = self.slot_atoms(weight, 1, node)
        self.result.producers.add(Slot(weight, 1))
        if bias is not None and len(self.tensor_shape(bias)) == 1:
            self.uf.union_arrays(out_atoms, self.slot_atoms(bias, 0, node))
        elif bias is not None:
            self.poison(self.value(node.args[0]), node, "bias of an unexpected shape")
        self.couple_index(in_atoms, source, source.ndim - 1, node, "input feature is fixed")
        return self.output(out_atoms.reshape((1,) * (ndim - 1) + (-1,)))

    def _matmul(self, node: fx.Node, left: Labels, right: Labels, ndim: int) -> Labels:
        left, right = right_align(left, ndim), right_align(right, ndim)
        batch = list(range(ndim - 2))
        left_vary, right_vary = varying_dims(left), varying_dims(right)
        n_dim, k_dim, m_dim = ndim - 2, ndim - 1, ndim - 1
        if k_dim in left_vary or n_dim in right_vary:
            if n_dim in left_vary or m_dim in right_vary:
                self.poison([left, right], node, "matrix product mixes labelled dimensions")
                return fixed(ndim)
            a = left.take(0, axis=n_dim)            # (..., k)
            b = right.take(0, axis=m_dim)           # (..., k)
            full_a, full_b = broadcast_labels([a, b])
            self.uf.union_arrays(full_a, full_b)
            mixed = (full_a < 0) != (full_b < 0)
            if mixed.any():
                self.uf.poison_atoms(np.concatenate([full_a[mixed], full_b[mixed]]),
                                     f"{self.where(node)}: contracted with a fixed dimension")
        reps_left = self._batch_reps(left, batch)
        reps_right = self._batch_reps(right, batch)
        full_l, full_r = broadcast_labels([reps_left, reps_right])
        both = (full_l >= 0) & (full_r >= 0)
        self.uf.union_arrays(full_l[both], full_r[both])
        if m_dim in right_vary and k_dim not in right_vary - {m_dim} - set(batch):
            out = right.take([0], axis=n_dim)
            return np.broadcast_to(out, out.shape)
        if n_dim in left_vary:
            return left.take([0], axis=k_dim)
        out_shape = full_l.shape + (1, 1)
        return np.where(full_l >= 0, full_l, full_r).reshape(out_shape)

    def _batch_reps(self, labels: Labels, batch: list[int]) -> np.ndarray:
        """For every batch position, the single set its labels belong to (-1 if not single)."""
        canon = canonical(labels, self.uf)
        canon = np.broadcast_to(canon, tuple(canon.shape[:len(batch)]) + canon.shape[len(batch):])
        shape = canon.shape[:len(batch)]
        flat = canon.reshape(int(np.prod(shape)) if shape else 1, -1)
        reps = np.full(flat.shape[0], FIXED, dtype=np.int64)
        for index, row in enumerate(flat):
            values = np.unique(row)
            if len(values) == 1 and values[0] >= 0:
                reps[index] = values[0]
        return reps.reshape(shape)

    def attention(self, node: fx.Node) -> Any:
        query, key, value = (self.labels(a) for a in node.args[:3])
        ndim = query.ndim
        scores = self._matmul(node, query, np.swapaxes(key, -1, -2), ndim)
        mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        if isinstance(mask, fx.Node):
            self._couple_mask(node, canonical(scores, self.uf), mask)
        out = self._matmul(node, canonical(scores, self.uf), value, ndim)
        return self.output(out)

    def _couple_mask(self, node: fx.Node, scores: Labels, mask: fx.Node) -> None:
        """An additive attention mask (e.g. relative-position biases per head) is added to the
        scores: its labelled positions couple with theirs as in an element-wise add."""
        query_shape, key_shape = shape_of(node.args[0]), shape_of(node.args[1])
        mask_shape = shape_of(mask)
        if query_shape is None or key_shape is None or mask_shape is None:
            return
        batch = tuple(np.broadcast_shapes(query_shape[:-2], key_shape[:-2]))
        scores_shape = batch + (query_shape[-2], key_shape[-2])
        ndim = max(len(scores_shape), len(mask_shape))
        extent_scores = {ndim - len(scores_shape) + d for d, size in enumerate(scores_shape)
                         if size > 1}
        self._couple_elementwise(node, right_align(scores, ndim), extent_scores,
                                 right_align(self.labels(mask), ndim), extent(mask, ndim))
