"""Rules for operations that move channels around: reshapes (splits into heads or groups keep the
layout valid), transposes, concatenation, chunk/split, select/slice, repeat, padding and channel
shuffle."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx

from compressor.graph.labels import broadcast_labels, canonical, fixed, right_align, varying_dims
from compressor.graph.rules.common import HEAD_WORDS, HeadSplit, Labels, as_list, norm_dim, op_name, shape_of
from compressor.graph.trace import module_stack

__all__ = ["ShapeRules"]


class ShapeRules:
    """Mixin of :class:`compressor.graph.propagate.Propagator` (uses its helpers)."""

    def reshape(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
        if in_shape is None or out_shape is None:
            return self.unknown(node)
        if op_name(node) in ("expand", "expand_as", "broadcast_to"):
            aligned = right_align(source, len(out_shape))
            return self.output(aligned)
        before = len(varying_dims(source))
        out = canonical(np.broadcast_to(source, in_shape).reshape(out_shape), self.uf)
        vary = sorted(varying_dims(out))
        if len(vary) > before and len(vary) >= 2:
            self._split(node, out, vary)
            out = canonical(out, self.uf)
        return out

    def _split(self, node: fx.Node, out: Labels, vary: list[int]) -> None:
        """A reshape split labelled channels over several dimensions: keep the layout valid."""
        candidate = vary[-2]
        path, attribute = self._head_attribute(node, out.shape[candidate])
        if attribute is not None:
            for head in range(out.shape[candidate]):
                members = out.take(head, axis=candidate)
                self.uf.union_all(members)
                self.result.head_atoms.update(int(a) for a in np.unique(members[members >= 0]))
            self.result.head_splits.append(HeadSplit(path, attribute, out, candidate))
            return
        inner = vary[-1]
        for index in range(out.shape[inner]):
            self.uf.union_all(out.take(index, axis=inner))

    def _head_attribute(self, node: fx.Node, count: int) -> tuple[str, str | None]:
        """The innermost enclosing module with an integer attribute naming heads equal to ``count``."""
        for _, path in reversed(module_stack(node)):
            try:
                module = self.model.get_submodule(path) if path else self.model
            except AttributeError:
                continue
            for attribute, value in vars(module).items():
                if (isinstance(value, int) and not isinstance(value, bool) and value == count
                        and any(word in attribute.lower() for word in HEAD_WORDS)
                        and "dim" not in attribute.lower()):
                    return path, attribute
        return "", None

    def transpose(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        ndim = source.ndim
        name = op_name(node)
        if name == "permute":
            order = [norm_dim(d, ndim) for d in node.args[1]]
        elif name in ("t", "numpy_T"):
            order = list(range(ndim))[::-1]
        elif name == "movedim":
            src = [norm_dim(d, ndim) for d in as_list(node.args[1])]
            dst = [norm_dim(d, ndim) for d in as_list(node.args[2])]
            return self.output(np.moveaxis(source, src, dst))
        else:
            first, second = norm_dim(node.args[1], ndim), norm_dim(node.args[2], ndim)
            order = list(range(ndim))
            order[first], order[second] = order[second], order[first]
        return self.output(np.transpose(source, order))

    def cat(self, node: fx.Node) -> Any:
        inputs = list(node.args[0])
        out_shape = shape_of(node)
        if out_shape is None:
            return self.unknown(node)
        ndim = len(out_shape)
        dim = norm_dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), ndim)
        parts = []
        for arg in inputs:
            shape = shape_of(arg)
            if shape is None or (len(shape) == 1 and shape[0] == 0):
                continue
            labels = right_align(self.labels(arg), ndim)
            parts.append((labels, shape))
        target = [max(labels.shape[d] for labels, _ in parts) if d != dim else 0
                  for d in range(ndim)]
        pieces = []
        for labels, shape in parts:
            piece_shape = list(target)
            piece_shape[dim] = shape[dim]
            pieces.append(np.broadcast_to(labels, tuple(piece_shape)))
        return self.output(np.concatenate(pieces, axis=dim))

    def stack(self, node: fx.Node) -> Any:
        out_shape = shape_of(node)
        if out_shape is None:
            return self.unknown(node)
        ndim = len(out_shape)
        dim = norm_dim(node.args[1] if len(node.args) > 1 else 0, ndim)
        arrays = [right_align(self.labels(a), ndim - 1) for a in node.args[0]]
        fulls = broadcast_labels(arrays)
        return self.output(np.stack(fulls, axis=dim))

    def _split_parts(self, node: fx.Node, source: Labels, dim: int, sizes: list[int]) -> list[Labels]:
        full = np.broadcast_to(source, tuple(sum(sizes) if d == dim else s
                                             for d, s in enumerate(source.shape)))
        bounds = np.cumsum([0] + sizes)
        return [self.output(full.take(range(lo, hi), axis=dim)) for lo, hi in zip(bounds, bounds[1:])]

    def chunk(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), len(shape))
        sizes = [int(v.shape[dim]) for v in node.meta["val"]]
        if dim in varying_dims(source):
            if len(set(sizes)) != 1:
                self.poison(source, node, "uneven chunks of channels")
            else:
                full = np.broadcast_to(source, tuple(shape[dim] if d == dim else s
                                                     for d, s in enumerate(source.shape)))
                grouped = np.moveaxis(full, dim, 0).reshape(len(sizes), sizes[0], -1)
                for offset in range(sizes[0]):
                    self.uf.union_all(grouped[:, offset])
        return self._split_parts(node, source, dim, sizes)

    def split(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), len(shape))
        sizes = [int(v.shape[dim]) for v in node.meta["val"]]
        if dim in varying_dims(source) and len(sizes) > 1:
            self.poison(source, node, "split into parts of fixed sizes along channels "
                                      "(use torch.chunk for an even split)")
        return self._split_parts(node, source, dim, sizes)

    def unbind(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[1] if len(node.args) > 1 else 0, len(shape))
        if dim in varying_dims(source):
            self.result.whole_hyperplanes.append((source, dim, self.where(node)))
        full = np.broadcast_to(source, tuple(shape[dim] if d == dim else s
                                             for d, s in enumerate(source.shape)))
        return [self.output(full.take(i, axis=dim)) for i in range(shape[dim])]

    def select(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[1], len(shape))
        index = int(node.args[2]) % shape[dim]
        if dim in varying_dims(source):
            self.result.whole_hyperplanes.append((source, dim, self.where(node)))
            return self.output(source.take(index, axis=dim))
        return self.output(source.take(0, axis=dim))

    def slice(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        out_shape = shape_of(node) or ()
        dim = norm_dim(node.args[1] if len(node.args) > 1 else 0, len(shape))
        if dim not in varying_dims(source):
            return source
        if out_shape[dim] == shape[dim]:
            return source
        self.poison(source, node, "slices a fixed range of channels")
        start = int(node.args[2]) if len(node.args) > 2 and node.args[2] is not None else 0
        step = int(node.args[4]) if len(node.args) > 4 else 1
        start = start % shape[dim] if start < 0 else start
        indices = list(range(start, start + step * out_shape[dim], step))
        return self.output(source.take(indices, axis=dim))

    def getitem(self, node: fx.Node) -> Any:
        container = self.values.get(node.args[0])
        if isinstance(container, (list, tuple)):
            item = container[node.args[1]]
            return item
        shape = shape_of(node)
        return fixed(len(shape)) if shape is not None else None

    def repeat(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        repeats = [int(r) for r in node.args[1]]
        shape = shape_of(node.args[0]) or ()
        aligned = right_align(source, len(repeats))
        in_shape = (1,) * (len(repeats) - len(shape)) + tuple(shape)
        full = np.broadcast_to(aligned, in_shape)
        return self.output(np.tile(full, repeats))

    def pad(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        pads = [int(p) for p in node.args[1]]
        padded = {source.ndim - 1 - i // 2 for i, p in enumerate(pads) if p}
        if varying_dims(source) & padded:
            self.poison(source, node, "pads along channels")
        return source

    def channel_shuffle(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        groups = int(node.args[1])
        full = np.broadcast_to(source, (1, shape[1]) + source.shape[2:])
        grouped = full.reshape((1, groups, shape[1] // groups) + source.shape[2:])
        for offset in range(shape[1] // groups):
            self.uf.union_all(grouped[:, :, offset])
        shuffled = np.swapaxes(grouped, 1, 2).reshape(full.shape)
        return self.output(shuffled)
