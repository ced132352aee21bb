"""Label arrays: which atom each position of a tensor belongs to.

A label array has the tensor's number of dimensions; every dimension has either the tensor's
size or size 1 (the labels are constant along it). ``-1`` marks a position whose channel is
fixed (a model input, a constant), which can never be removed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compressor.graph.atoms import UnionFind

__all__ = ["FIXED", "fixed", "collapse", "canonical", "varying_dims", "broadcast_labels",
           "right_align", "per_index"]

FIXED = -1


def fixed(ndim: int) -> np.ndarray:
    """Labels of a tensor whose every position is fixed."""
    return np.full((1,) * ndim, FIXED, dtype=np.int64)


def collapse(labels: np.ndarray) -> np.ndarray:
    """Shrink every dimension along which the labels are constant to size 1."""
    for dim in range(labels.ndim):
        if labels.shape[dim] > 1:
            first = labels.take([0], axis=dim)
            if np.array_equal(np.broadcast_to(first, labels.shape), labels):
                labels = first
    return np.ascontiguousarray(labels)


def canonical(labels: np.ndarray, union_find: UnionFind) -> np.ndarray:
    """Replace every atom by the representative of its set, then collapse."""
    values, inverse = np.unique(labels, return_inverse=True)
    mapped = np.array([union_find.find(int(v)) if v >= 0 else FIXED for v in values], dtype=np.int64)
    return collapse(mapped[inverse].reshape(labels.shape))


def varying_dims(labels: np.ndarray) -> set[int]:
    """Dimensions along which the (collapsed) labels vary."""
    return {dim for dim, size in enumerate(labels.shape) if size > 1}


def right_align(labels: np.ndarray, ndim: int) -> np.ndarray:
    """Prepend size-1 dimensions so ``labels`` has ``ndim`` dimensions (broadcasting rules)."""
    return labels.reshape((1,) * (ndim - labels.ndim) + labels.shape)


def broadcast_labels(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Broadcast label arrays against each other (sizes are 1 or the full size)."""
    ndim = max(a.ndim for a in arrays)
    aligned = [right_align(a, ndim) for a in arrays]
    shape = tuple(max(a.shape[d] for a in aligned) for d in range(ndim))
    return [np.broadcast_to(a, shape) for a in aligned]


def per_index(labels: np.ndarray, dim: int, size: int) -> np.ndarray:
    """A ``(size, k)`` matrix: row ``i`` lists the labels at index ``i`` along ``dim``."""
    shape = list(labels.shape)
    shape[dim] = size
    full = np.broadcast_to(labels, shape)
    return np.moveaxis(full, dim, 0).reshape(size, -1)
