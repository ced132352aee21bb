"""Rules for operations that move channels around: reshapes (splits into heads or groups keep the
layout valid), transposes, concatenation, chunk/split, select/slice, repeat, padding and channel
shuffle."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import fx

from compressor.graph.handlers import handler_for
from compressor.graph.labels import broadcast_labels, canonical, fixed, right_align, varying_dims
from compressor.graph.rules.common import (
    HEAD_WORDS,
    Labels,
    SizeAttribute,
    as_list,
    get_tensor,
    norm_dim,
    op_name,
    shape_of,
    size_attributes,
)
from compressor.utils.modules import module_stack

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
        head_dim = None
        if len(vary) > before and len(vary) >= 2:
            head_dim = self._split(node, out, vary)
            out = canonical(out, self.uf)
        for dim in varying_dims(out) - {head_dim}:
            self.record_size(node, out, dim)
        return out

    def record_size(self, node: fx.Node, labels: Labels, dim: int) -> bool:
        """Record the attribute of the innermost enclosing module that holds the size of
        ``labels`` along ``dim`` (a constant of the graph), so compaction updates it."""
        found = self._size_owner(node, labels.shape[dim])
        if found is None:
            return False
        path, attributes = found
        for attribute in attributes:
            self.result.size_attributes.append(SizeAttribute(path, attribute, labels, dim))
        return True

    def _size_owner(self, node: fx.Node, size: int, words: tuple[str, ...] | None = None,
                    ) -> tuple[str, list[str]] | None:
        """The width attributes equal to ``size`` of the module whose own ``forward`` runs
        ``node`` (not of its callers: a size one level up usually means something else), unless
        that module has a handler, which keeps its attributes itself."""
        stack = module_stack(node)
        path = stack[-1][1] if stack else ""
        try:
            module = self.model.get_submodule(path) if path else self.model
        except AttributeError:
            return None
        if handler_for(module) is not None:
            return None
        found = size_attributes(module, size) if words is None else \
            size_attributes(module, size, words)
        return (path, found) if found else None

    def _split(self, node: fx.Node, out: Labels, vary: list[int]) -> int | None:
        """A reshape split labelled channels over several dimensions: keep the layout valid.
        Returns the dimension of attention heads, if the split made heads."""
        candidate = vary[-2]
        owner = self._size_owner(node, out.shape[candidate], HEAD_WORDS)
        heads = [a for a in owner[1] if "dim" not in a.lower()] if owner else []
        if heads:
            for head in range(out.shape[candidate]):
                members = out.take(head, axis=candidate)
                self.uf.union_all(members)
                self.result.head_atoms.update(int(a) for a in np.unique(members[members >= 0]))
            for attribute in heads:
                self.result.size_attributes.append(SizeAttribute(owner[0], attribute, out,
                                                                 candidate))
            return candidate
        inner = vary[-1]
        for index in range(out.shape[inner]):
            self.uf.union_all(out.take(index, axis=inner))
        return None

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
                self._couple_chunks(source, dim, sizes)
        return self._split_parts(node, source, dim, sizes)

    def _couple_chunks(self, source: Labels, dim: int, sizes: list[int]) -> None:
        """Equal parts must stay equal: position ``i`` of every part is removed together."""
        full = np.broadcast_to(source, tuple(sum(sizes) if d == dim else s
                                             for d, s in enumerate(source.shape)))
        grouped = np.moveaxis(full, dim, 0).reshape(len(sizes), sizes[0], -1)
        for offset in range(sizes[0]):
            self.uf.union_all(grouped[:, offset])

    def split(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), len(shape))
        sizes = [int(v.shape[dim]) for v in node.meta["val"]]
        if dim in varying_dims(source) and len(sizes) > 1:
            if len(set(sizes)) == 1 and op_name(node) != "split_with_sizes":
                return self._equal_split(node, source, dim, sizes)
            self.poison(source, node, "split into parts of fixed sizes along channels "
                                      "(use torch.chunk for an even split)")
        return self._split_parts(node, source, dim, sizes)

    def _equal_split(self, node: fx.Node, source: Labels, dim: int, sizes: list[int]) -> Any:
        """``x.split(size)`` into equal parts: like ``chunk`` when a module attribute holds the
        part size (it then follows the kept width of a part); otherwise the size is fixed."""
        self._couple_chunks(source, dim, sizes)
        parts = self._split_parts(node, source, dim, sizes)
        if not self.record_size(node, parts[0], dim):
            self.poison(source, node, f"split into parts of a fixed size ({sizes[0]}) along "
                                      "channels, and no attribute of the module holds that size")
        return parts

    def unbind(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[1] if len(node.args) > 1 else 0, len(shape))
        if dim in varying_dims(source):
            self.result.whole_hyperplanes.append((source, dim, self.where(node)))
        full = np.broadcast_to(source, tuple(shape[dim] if d == dim else s
                                             for d, s in enumerate(source.shape)))
        return [self.output(full.take(i, axis=dim)) for i in range(shape[dim])]

    def index(self, node: fx.Node) -> Any:
        """Advanced indexing ``x[i, j]`` with integer index tensors (``aten.index``), e.g. a
        relative-position bias table gathered with a buffer of positions."""
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0])
        if shape is None or shape_of(node) is None:
            return self.unknown(node)
        positions: list[Any] = []
        for dim, index in enumerate(node.args[1]):
            positions.append(slice(None) if index is None else
                             self._index_positions(node, source, dim, index, shape[dim]))
        full = np.broadcast_to(source, shape) if source.ndim == len(shape) else source
        return self.output(np.asarray(full[tuple(positions)]))

    def index_select(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = norm_dim(node.args[1], len(shape))
        positions: list[Any] = [slice(None)] * len(shape)
        positions[dim] = self._index_positions(node, source, dim, node.args[2], shape[dim])
        full = np.broadcast_to(source, shape)
        return self.output(np.asarray(full[tuple(positions)]))

    def _index_positions(self, node: fx.Node, source: Labels, dim: int, index: Any,
                         size: int) -> np.ndarray:
        """The integer positions an index tensor picks along ``dim``: its values when it is a
        parameter, buffer or constant of the model; any positions when the labels do not vary
        along ``dim``; otherwise the labelled channels there are poisoned."""
        index_shape = shape_of(index)
        if index_shape is None:
            raise ValueError("index without a static shape")
        value = index.meta.get("val") if isinstance(index, fx.Node) else None
        if value is not None and value.dtype == torch.bool:
            raise ValueError("boolean mask indexing")
        values = self._constant_value(index)
        if values is not None:
            return values.detach().cpu().numpy().astype(np.int64) % size
        if dim in varying_dims(source):
            self.poison(source, node, "indexes channels with computed positions")
        return np.zeros(index_shape, dtype=np.int64)

    def _constant_value(self, node: Any, limit: int = 16) -> torch.Tensor | None:
        """The value of a tensor computed from the model's buffers and parameters alone (e.g.
        ``self.index.view(-1)``), by running its few operations; ``None`` if it depends on the
        inputs or takes more than ``limit`` operations."""
        if not isinstance(node, fx.Node):
            return None
        name = self.tensor_name(node)
        if name is not None:
            try:
                return get_tensor(self.model, name)
            except AttributeError:  # a constant lifted by torch.export, not a model attribute
                return None
        if node.op != "call_function" or limit <= 0:
            return None
        arguments = {}
        for arg in node.all_input_nodes:
            value = self._constant_value(arg, limit - 1)
            if value is None:
                return None
            arguments[arg] = value
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: arguments[a])
        with torch.no_grad():
            return node.target(*args, **kwargs)

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
