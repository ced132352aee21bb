"""Rules for element-wise operations: unary ops keep the labels; binary ops with broadcasting union
the channels of operands that line up and make channels combined with a fixed tensor of the same
width fixed."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx

from compressor.graph.labels import broadcast_labels, fixed, right_align, varying_dims
from compressor.graph.rules.common import Labels, extent, node_args, shape_of

__all__ = ["ElementwiseRules"]


class ElementwiseRules:
    """Mixin of :class:`compressor.graph.propagate.Propagator` (uses its helpers)."""

    def unary(self, node: fx.Node) -> Any:
        labels = self.labels(node.args[0])
        return [labels, None] if isinstance(node.meta.get("val"), (list, tuple)) else labels

    def constant(self, node: fx.Node) -> Any:
        shape = shape_of(node)
        return fixed(len(shape)) if shape is not None else None

    def elementwise(self, node: fx.Node) -> Any:
        operands = [(arg, self.value(arg)) for arg in node_args(node)]
        tensors = [(arg, labels) for arg, labels in operands if isinstance(labels, np.ndarray)]
        out_shape = shape_of(node)
        if out_shape is None:
            return None
        if not tensors:
            return fixed(len(out_shape))
        ndim = len(out_shape)
        aligned = [(right_align(labels, ndim), extent(arg, ndim)) for arg, labels in tensors]
        for i, (labels_i, extent_i) in enumerate(aligned):
            for labels_j, extent_j in aligned[i + 1:]:
                self._couple_elementwise(node, labels_i, extent_i, labels_j, extent_j)
        return self.output(self._choose(node, aligned, out_shape))

    def _couple_elementwise(self, node: fx.Node, a: Labels, extent_a: set[int], b: Labels,
                            extent_b: set[int]) -> None:
        vary_a, vary_b = varying_dims(a), varying_dims(b)
        couple = vary_a <= extent_b and vary_b <= extent_a
        a_meets_fixed = bool(vary_a) and vary_a <= extent_b
        b_meets_fixed = bool(vary_b) and vary_b <= extent_a
        if not (couple or a_meets_fixed or b_meets_fixed):
            return
        full_a, full_b = broadcast_labels([a, b])
        if couple:
            self.uf.union_arrays(full_a, full_b)
        if b_meets_fixed:
            self._poison_where_fixed(node, full_b, full_a)
        if a_meets_fixed:
            self._poison_where_fixed(node, full_a, full_b)

    def _poison_where_fixed(self, node: fx.Node, labels: np.ndarray, other: np.ndarray) -> None:
        """Poison the atoms of ``labels`` at positions where ``other`` is a fixed (unlabelled)
        tensor: removing them would leave a width mismatch with it."""
        fixed_here = (other < 0) & (labels >= 0)
        if fixed_here.any():
            self.uf.poison_atoms(labels[fixed_here], f"{self.where(node)}: combined with a "
                                                     "fixed tensor of the same width")

    def _choose(self, node: fx.Node, aligned: list[tuple[Labels, set[int]]],
                out_shape: tuple[int, ...]) -> Labels:
        """Output labels: positions take the first operand's atom, then the next ones'."""
        ranked = sorted(aligned, key=lambda item: (-len(varying_dims(item[0])),
                                                   self._is_element(item[0])))
        fulls = broadcast_labels([labels for labels, _ in ranked])
        out = np.array(fulls[0])
        best_vary = varying_dims(ranked[0][0])
        for (labels, _), full in zip(ranked[1:], fulls[1:]):
            vary = varying_dims(labels)
            if vary and not vary <= best_vary and not self._is_element(labels):
                self.poison(labels, node, "channels broadcast against differently labelled ones")
                continue
            missing = (out < 0) & (full >= 0)
            out[missing] = full[missing]
        return out

    def _is_element(self, labels: Labels) -> bool:
        atoms = labels[labels >= 0]
        if not atoms.size:
            return False
        return self.result.space.locate(int(atoms.flat[0]))[0].element
