"""Rules for layers with parameters: convolutions (grouped and depthwise), linear layers,
batch/group/layer norms, PReLU and embeddings. Producers create one atom per output channel;
consumers union their input slices with the channels they read."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx, nn

from compressor.graph.atoms import Slot
from compressor.graph.labels import canonical, per_index, varying_dims
from compressor.graph.rules.common import Labels, NormUse, op_name, shape_of
from compressor.graph.trace import module_of
from compressor.utils.modules import module_stack

__all__ = ["LayerRules"]


class LayerRules:
    """Mixin of :class:`compressor.graph.propagate.Propagator` (uses its helpers)."""

    def conv(self, node: fx.Node) -> Any:
        args = list(node.args)
        name = self.tensor_name(args[1])
        if op_name(node) in ("convolution", "_convolution") and args[6]:
            return self.unknown(node, "transposed convolution is not supported")
        if name is None:
            return self.unknown(node, "convolution with a computed weight")
        if op_name(node) in ("convolution", "_convolution"):
            groups = int(args[8])
        else:
            groups = int(args[6]) if len(args) > 6 else int(node.kwargs.get("groups", 1))
        weight_shape = self.tensor_shape(name)
        out_channels, in_per_group = weight_shape[0], weight_shape[1]
        source = self.labels(args[0])
        input_shape = shape_of(args[0]) or ()
        channel_dim = 1 if len(input_shape) == len(weight_shape) else 0
        out_atoms = self.slot_atoms(name, 0, node)
        in_atoms = self.slot_atoms(name, 1, node)
        self.result.producers.add(Slot(name, 0))
        bias = self.tensor_name(args[2]) if len(args) > 2 else None
        if bias is not None:
            self.uf.union_arrays(out_atoms, self.slot_atoms(bias, 0, node))
        rows = per_index(source, channel_dim, in_per_group * groups)
        if groups == 1:
            self.couple_index(in_atoms, source, channel_dim, node, "input channel is fixed")
        elif in_per_group == 1:
            multiplier = out_channels // groups
            self.uf.poison_atoms(in_atoms, f"{self.where(node)}: depthwise input slice")
            for group in range(groups):
                members = out_atoms[group * multiplier:(group + 1) * multiplier]
                self.couple_index(members, rows[group:group + 1].repeat(len(members), axis=0)
                                  .reshape(len(members), -1), 0, node, "input channel is fixed")
                self.uf.union_all(members)
        else:
            out_per_group = out_channels // groups
            for offset in range(out_per_group):
                self.uf.union_all(out_atoms[offset::out_per_group])
            grouped = rows.reshape(groups, in_per_group, -1).transpose(1, 0, 2)
            self.couple_index(in_atoms, grouped.reshape(in_per_group, -1), 0, node,
                              "input channel is fixed")
        shape = [1] * len(input_shape)
        shape[channel_dim] = out_channels
        return self.output(out_atoms.reshape(shape))

    def linear(self, node: fx.Node) -> Any:
        source_arg, weight_arg = node.args[0], node.args[1]
        name = self.tensor_name(weight_arg)
        if name is None:
            return self.unknown(node, "linear layer with a computed weight")
        source = self.labels(source_arg)
        out_atoms = self.slot_atoms(name, 0, node)
        in_atoms = self.slot_atoms(name, 1, node)
        self.result.producers.add(Slot(name, 0))
        bias = self.tensor_name(node.args[2]) if len(node.args) > 2 else None
        if bias is not None:
            self.uf.union_arrays(out_atoms, self.slot_atoms(bias, 0, node))
        last = source.ndim - 1
        self.couple_index(in_atoms, source, last, node, "input feature is fixed")
        source = canonical(source, self.uf)
        if varying_dims(source) - {last}:
            self.uf.poison_atoms(out_atoms, f"{self.where(node)}: output features mix with other "
                                            "labelled dimensions")
            return self.output(source.take([0], axis=last))
        return self.output(out_atoms.reshape((1,) * last + (-1,)))

    def per_channel_params(self, node: fx.Node, source: Labels, tensors: list[Any],
                           channel_dim: int = 1) -> None:
        for arg in tensors:
            name = self.tensor_name(arg)
            if name is not None:
                atoms = self.slot_atoms(name, 0, node)
                self.couple_index(atoms, source, channel_dim, node, "channel is fixed")

    def batch_norm(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        self.per_channel_params(node, source, list(node.args[1:5]))
        out = self.output(source)
        if op_name(node) in ("batch_norm", "instance_norm"):
            return out
        return [out, None, None] + [None] * 2

    def prelu(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        name = self.tensor_name(node.args[1])
        if name is not None and self.tensor_shape(name)[0] > 1:
            self.per_channel_params(node, source, [node.args[1]])
        return self.output(source)

    def group_norm(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        groups = int(node.args[1]) if op_name(node) == "group_norm" else int(node.args[6])
        channels = (shape_of(node.args[0]) or (0, 0))[1]
        rows = per_index(source, 1, channels)
        size = channels // groups
        for group in range(groups):
            self.uf.union_all(rows[group * size:(group + 1) * size])
        params = list(node.args[2:4]) if op_name(node) == "group_norm" else list(node.args[1:3])
        self.per_channel_params(node, source, params)
        out = self.output(source)
        return out if op_name(node) == "group_norm" else [out, None, None]

    def layer_norm(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        normalized = list(node.args[1])
        ndim = source.ndim
        norm_dims = set(range(ndim - len(normalized), ndim))
        labelled = varying_dims(source) & norm_dims
        if labelled:
            use = self._norm_use(node, source) if len(normalized) == 1 else None
            if use is None:
                self.poison(source, node, "normalisation statistics over these channels would change")
            else:
                self.result.norms.append(use)
        weight_args = [node.args[2], node.args[3] if len(node.args) > 3 else None]
        if op_name(node) == "rms_norm":
            weight_args = [node.args[2]]
        if len(normalized) == 1:
            self.per_channel_params(node, source, weight_args, channel_dim=ndim - 1)
        else:
            for arg in weight_args:
                self.poison(self.value(arg), node, "multi-dimensional normalisation")
        out = self.output(source)
        if op_name(node) == "native_layer_norm":
            return [out, None, None]
        return out

    def _norm_use(self, node: fx.Node, source: Labels) -> NormUse | None:
        """The LayerNorm-style module normalising ``source`` over its last dimension, with the
        channel dimension of that module's own input (``None`` if there is no such module)."""
        path, _ = module_of(node)
        module = self.model.get_submodule(path) if path else self.model
        if not isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            return None
        eps = float(node.args[4]) if len(node.args) > 4 and node.args[4] is not None else 1e-5
        if op_name(node) == "rms_norm":
            eps = float(node.args[3]) if len(node.args) > 3 and node.args[3] else 1e-6
        entry = self._module_input(node)
        if entry is None:
            return None
        labels = canonical(self.labels(entry), self.uf)
        channels = canonical(source, self.uf)
        channels = channels.reshape(-1) if channels.ndim <= 1 else \
            np.moveaxis(channels, -1, 0).reshape(channels.shape[-1], -1)[:, 0]
        for dim in varying_dims(labels):
            along = np.moveaxis(labels, dim, 0).reshape(labels.shape[dim], -1)[:, 0]
            if along.shape == channels.shape and np.array_equal(along, channels):
                return NormUse(path, labels, eps, dim - labels.ndim)
        return None

    def _module_input(self, node: fx.Node) -> fx.Node | None:
        """The tensor entering the innermost module call that contains ``node``."""
        stack = module_stack(node)
        if not stack:
            return None
        key = stack[-1][0]
        inside = {n for n in self.traced.graph.nodes
                  if any(entry[0] == key for entry in module_stack(n))}
        entries = [arg for n in inside for arg in n.all_input_nodes
                   if arg not in inside and arg.name not in self.traced.tensors]
        entries = list(dict.fromkeys(entries))
        return entries[0] if len(entries) == 1 else None

    def embedding(self, node: fx.Node) -> Any:
        name = self.tensor_name(node.args[0])
        shape = shape_of(node)
        if name is None or shape is None:
            return self.unknown(node, "embedding with a computed table")
        atoms = self.slot_atoms(name, 1, node)
        self.result.producers.add(Slot(name, 1))
        return self.output(atoms.reshape((1,) * (len(shape) - 1) + (-1,)))
