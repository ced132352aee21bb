"""Label propagation through an ATen graph: which parameter slices must be removed together.

Each operation of the traced forward pass either creates channels (a convolution's output
channels are new atoms), carries them (activations, pooling, reshapes), couples them (a residual
add unions the channels of its operands, a consumer's input slices are unioned with the channels
it reads) or forbids their removal (an unknown operation, a reduction over channels, the model
output). Rules are looked up by the ATen operator name.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import fx, nn

from compressor.graph.atoms import AtomSpace, Slot, UnionFind
from compressor.graph.labels import (
    FIXED,
    broadcast_labels,
    canonical,
    fixed,
    per_index,
    right_align,
    varying_dims,
)
from compressor.graph.trace import TracedModel, module_of, module_stack

__all__ = ["Propagation", "HeadSplit", "NormUse", "propagate", "OUTPUT_REASON"]

OUTPUT_REASON = "reaches the model output"

Labels = np.ndarray


@dataclass
class HeadSplit:
    """A reshape that splits channels into attention heads inside ``module``; ``attribute``
    holds the head count and must follow the number of kept heads."""

    module: str
    attribute: str
    labels: np.ndarray
    dim: int


@dataclass
class NormUse:
    """A LayerNorm-style module normalising over labelled channels (last dimension)."""

    module: str
    labels: np.ndarray
    eps: float


@dataclass
class Propagation:
    """Result of propagating labels: atoms, their sets, and what the compaction must know."""

    space: AtomSpace
    union_find: UnionFind
    producers: set[Slot] = field(default_factory=set)
    head_atoms: set[int] = field(default_factory=set)
    head_splits: list[HeadSplit] = field(default_factory=list)
    norms: list[NormUse] = field(default_factory=list)
    whole_hyperplanes: list[tuple[np.ndarray, int, str]] = field(default_factory=list)
    element_tensors: set[str] = field(default_factory=set)
    slot_owner_ops: dict[Slot, str] = field(default_factory=dict)


_UNARY = {
    "relu", "relu_", "hardtanh", "hardtanh_", "relu6", "gelu", "silu", "silu_", "sigmoid",
    "hardsigmoid", "hardswish", "hardswish_", "tanh", "leaky_relu", "leaky_relu_", "elu", "selu",
    "celu", "mish", "softplus", "dropout", "feature_dropout", "alpha_dropout", "clone",
    "contiguous", "alias", "detach", "abs", "neg", "exp", "log", "log1p", "sqrt", "rsqrt", "square",
    "reciprocal", "erf", "sin", "cos", "_to_copy", "to", "lift_fresh_copy", "sign", "round",
    "floor", "ceil", "nan_to_num", "logit", "clamp", "clamp_min", "clamp_max", "pow", "zeros_like",
    "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "bitwise_not",
    "logical_not", "isnan", "isfinite", "trunc", "frac", "sigmoid_", "tanh_", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d",
    "upsample_bicubic2d", "upsample_linear1d", "upsample_trilinear3d", "_upsample_nearest_exact2d",
    "_upsample_bilinear2d_aa", "native_dropout",
}
_BINARY = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum", "fmod",
    "remainder", "atan2", "eq", "ne", "gt", "lt", "ge", "le", "logical_and", "logical_or",
    "logical_xor", "bitwise_and", "bitwise_or", "rsub", "addcmul", "addcdiv", "lerp", "where",
    "masked_fill", "masked_fill_", "copysign", "hypot", "floor_divide", "true_divide",
}
_CONSTANTS = {"zeros", "ones", "full", "arange", "empty", "rand", "randn", "randint",
              "scalar_tensor", "tensor", "new_zeros", "new_ones", "new_full", "new_empty",
              "linspace", "eye", "tril", "triu"}
_IGNORED = {"sym_size", "sym_numel", "sym_stride", "_assert_tensor_metadata", "_assert_async",
            "sym_constrain_range", "sym_constrain_range_for_size", "_assert_scalar",
            "sym_storage_offset", "_functional_assert_async", "dim", "size", "numel", "item"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "prod", "var", "std", "logsumexp",
               "linalg_vector_norm", "norm", "argmax", "argmin", "all", "any", "median",
               "var_mean", "std_mean"}
_POOLS = {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d",
          "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
          "max_pool2d_with_indices", "adaptive_max_pool2d", "adaptive_max_pool1d",
          "_adaptive_avg_pool2d", "lp_pool2d"}
_RESHAPES = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "view_as", "reshape_as",
             "expand", "expand_as", "unsqueeze", "squeeze", "squeeze_", "unsqueeze_", "broadcast_to",
             "atleast_2d", "ravel"}
_TRANSPOSES = {"permute", "transpose", "t", "movedim", "swapaxes", "swapdims", "numpy_T"}
_HEAD_WORDS = ("head",)


def op_name(node: fx.Node) -> str:
    """The bare operator name of a call node (``aten.conv2d.default`` -> ``conv2d``)."""
    target = node.target
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", str(target))
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        name = getattr(packet, "__name__", name)
    return name.split(".")[-1]


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The static shape of a node's tensor value, or ``None`` for non-tensors."""
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        return None


class _Propagator:
    """Walks the graph once in topological order, applying one rule per operation."""

    def __init__(self, traced: TracedModel, model: nn.Module) -> None:
        self.traced = traced
        self.model = model
        self.result = Propagation(AtomSpace(), UnionFind())
        self.values: dict[fx.Node, Any] = {}
        self.rules: dict[str, Callable[[fx.Node], Any]] = self._rules()

    # ----------------------------------------------------------------- helpers
    @property
    def uf(self) -> UnionFind:
        return self.result.union_find

    def atoms(self, slot: Slot, length: int) -> np.ndarray:
        ids = self.result.space.atoms(slot, length)
        self.uf.grow(self.result.space.size)
        return ids

    def where(self, node: fx.Node) -> str:
        path, type_name = module_of(node)
        location = f" in `{path}` ({type_name})" if path else ""
        return f"{op_name(node)}{location}"

    def poison(self, labels: Any, node: fx.Node, why: str) -> None:
        for array in _flatten(labels):
            self.uf.poison_atoms(array, f"{self.where(node)}: {why}")

    def tensor_name(self, arg: Any) -> str | None:
        """Qualified name of the parameter/buffer a node argument refers to, if any."""
        if isinstance(arg, fx.Node) and arg.op == "placeholder":
            return self.traced.tensors.get(arg.name)
        return None

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(_get_tensor(self.model, name).shape)

    def slot_atoms(self, name: str, dim: int, node: fx.Node) -> np.ndarray:
        slot = Slot(name, dim)
        self.result.slot_owner_ops.setdefault(slot, op_name(node))
        return self.atoms(slot, self.tensor_shape(name)[dim])

    def value(self, arg: Any) -> Any:
        """Labels of an argument: a label array for tensors, ``None`` for anything else."""
        if not isinstance(arg, fx.Node):
            if isinstance(arg, (list, tuple)):
                return [self.value(a) for a in arg]
            return None
        if arg in self.values:
            return self.values[arg]
        if arg.op == "placeholder":
            name = self.traced.tensors.get(arg.name)
            shape = shape_of(arg)
            if name is not None and shape is not None:
                self.result.element_tensors.add(name)
                labels = self.atoms(Slot(name, -1, element=True), int(np.prod(shape)) or 1)
                return labels.reshape(shape) if shape else labels.reshape(())
            return fixed(len(shape)) if shape is not None else None
        return None

    def labels(self, arg: Any) -> Labels:
        """Labels of a tensor argument (fixed labels when unknown)."""
        value = self.value(arg)
        if isinstance(value, np.ndarray):
            return value
        shape = shape_of(arg)
        return fixed(len(shape) if shape else 0)

    def couple_index(self, atoms: np.ndarray, labels: Labels, dim: int, node: fx.Node,
                     why_fixed: str) -> None:
        """Union ``atoms[i]`` with every label at index ``i`` along ``dim``; an index that holds
        a fixed label makes its atom fixed too."""
        rows = per_index(labels, dim, len(atoms))
        self.uf.union_arrays(np.repeat(atoms[:, None], rows.shape[1], axis=1), rows)
        fixed_rows = (rows < 0).any(axis=1)
        if fixed_rows.any():
            self.uf.poison_atoms(atoms[fixed_rows], f"{self.where(node)}: {why_fixed}")

    def output(self, labels: Labels) -> Labels:
        return canonical(labels, self.uf)

    def unknown(self, node: fx.Node, why: str = "operation not supported by the dependency graph") -> Any:
        for arg in _node_args(node):
            self.poison(self.value(arg), node, why)
        shape = shape_of(node)
        if shape is not None:
            return fixed(len(shape))
        value = node.meta.get("val")
        if isinstance(value, (list, tuple)):
            return [fixed(len(v.shape)) if hasattr(v, "shape") else None for v in value]
        return None

    # ------------------------------------------------------------------- rules
    def _rules(self) -> dict[str, Callable[[fx.Node], Any]]:
        rules: dict[str, Callable[[fx.Node], Any]] = {}
        for name in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution"):
            rules[name] = self.conv
        rules["linear"] = self.linear
        for name in ("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                     "_native_batch_norm_legit_functional", "native_batch_norm", "instance_norm",
                     "cudnn_batch_norm"):
            rules[name] = self.batch_norm
        rules["prelu"] = self.prelu
        rules["_prelu_kernel"] = self.prelu
        rules["group_norm"] = self.group_norm
        rules["native_group_norm"] = self.group_norm
        rules["layer_norm"] = self.layer_norm
        rules["native_layer_norm"] = self.layer_norm
        rules["rms_norm"] = self.layer_norm
        rules["embedding"] = self.embedding
        rules.update({name: self.unary for name in _UNARY})
        rules.update({name: self.elementwise for name in _BINARY})
        rules.update({name: self.constant for name in _CONSTANTS})
        rules.update({name: self.reduction for name in _REDUCTIONS})
        rules.update({name: self.pool for name in _POOLS})
        rules.update({name: self.reshape for name in _RESHAPES})
        rules.update({name: self.transpose for name in _TRANSPOSES})
        for name in ("softmax", "_softmax", "log_softmax", "_log_softmax", "cumsum", "cumprod",
                     "flip", "roll", "sort", "topk", "_safe_softmax"):
            rules[name] = self.along_dim
        for name in ("matmul", "bmm", "mm"):
            rules[name] = self.matmul
        rules["scaled_dot_product_attention"] = self.attention
        rules["cat"] = self.cat
        rules["concat"] = self.cat
        rules["stack"] = self.stack
        rules["chunk"] = self.chunk
        rules["unsafe_chunk"] = self.chunk
        rules["split"] = self.split
        rules["split_with_sizes"] = self.split
        rules["unsafe_split"] = self.split
        rules["unbind"] = self.unbind
        rules["select"] = self.select
        rules["slice"] = self.slice
        rules["narrow"] = self.slice
        rules["getitem"] = self.getitem
        rules["repeat"] = self.repeat
        rules["constant_pad_nd"] = self.pad
        rules["pad"] = self.pad
        rules["channel_shuffle"] = self.channel_shuffle
        rules["native_channel_shuffle"] = self.channel_shuffle
        rules["type_as"] = self.unary
        return rules

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
        path, type_name = module_of(node)
        if labelled:
            if len(normalized) != 1 or type_name not in ("LayerNorm", "RMSNorm"):
                self.poison(source, node, "normalisation statistics over these channels would change")
            else:
                eps = float(node.args[4]) if len(node.args) > 4 and node.args[4] is not None else 1e-5
                if op_name(node) == "rms_norm":
                    eps = float(node.args[3]) if len(node.args) > 3 and node.args[3] else 1e-6
                self.result.norms.append(NormUse(path, source, eps))
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

    def embedding(self, node: fx.Node) -> Any:
        name = self.tensor_name(node.args[0])
        shape = shape_of(node)
        if name is None or shape is None:
            return self.unknown(node, "embedding with a computed table")
        atoms = self.slot_atoms(name, 1, node)
        self.result.producers.add(Slot(name, 1))
        return self.output(atoms.reshape((1,) * (len(shape) - 1) + (-1,)))

    def unary(self, node: fx.Node) -> Any:
        labels = self.labels(node.args[0])
        return [labels, None] if isinstance(node.meta.get("val"), (list, tuple)) else labels

    def constant(self, node: fx.Node) -> Any:
        shape = shape_of(node)
        return fixed(len(shape)) if shape is not None else None

    def elementwise(self, node: fx.Node) -> Any:
        operands = [(arg, self.value(arg)) for arg in _node_args(node)]
        tensors = [(arg, labels) for arg, labels in operands if isinstance(labels, np.ndarray)]
        out_shape = shape_of(node)
        if out_shape is None:
            return None
        if not tensors:
            return fixed(len(out_shape))
        ndim = len(out_shape)
        aligned = [(right_align(labels, ndim), _extent(arg, ndim)) for arg, labels in tensors]
        for i, (labels_i, extent_i) in enumerate(aligned):
            for labels_j, extent_j in aligned[i + 1:]:
                self._couple_elementwise(node, labels_i, extent_i, labels_j, extent_j)
        return self.output(self._choose(node, aligned, out_shape))

    def _couple_elementwise(self, node: fx.Node, a: Labels, extent_a: set[int], b: Labels,
                            extent_b: set[int]) -> None:
        vary_a, vary_b = varying_dims(a), varying_dims(b)
        if vary_a <= extent_b and vary_b <= extent_a:
            full_a, full_b = broadcast_labels([a, b])
            self.uf.union_arrays(full_a, full_b)
        if vary_b and vary_b <= extent_a:
            full_a, full_b = broadcast_labels([a, b])
            fixed_here = (full_a < 0) & (full_b >= 0)
            if fixed_here.any():
                self.uf.poison_atoms(full_b[fixed_here], f"{self.where(node)}: combined with a "
                                                         "fixed tensor of the same width")
        if vary_a and vary_a <= extent_b:
            full_a, full_b = broadcast_labels([a, b])
            fixed_here = (full_b < 0) & (full_a >= 0)
            if fixed_here.any():
                self.uf.poison_atoms(full_a[fixed_here], f"{self.where(node)}: combined with a "
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

    def reduction(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dims = _dims_arg(node, 1, len(shape))
        keepdim = bool(node.args[2]) if len(node.args) > 2 and isinstance(node.args[2], bool) \
            else bool(node.kwargs.get("keepdim", False))
        if op_name(node) in ("linalg_vector_norm", "norm"):
            dims = _dims_arg(node, 2, len(shape))
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
        dims = _dims_arg(node, 1, ndim) if op_name(node) not in ("roll",) else _dims_arg(node, 2, ndim)
        if op_name(node) in ("sort", "topk"):
            dims = [_norm_dim(node.args[2] if len(node.args) > 2 else -1, ndim)]
        if varying_dims(source) & set(dims):
            self.poison(source, node, "mixes or reorders channels")
        value = node.meta.get("val")
        if isinstance(value, (list, tuple)):
            return [source, None]
        return source

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
                        and any(word in attribute.lower() for word in _HEAD_WORDS)
                        and "dim" not in attribute.lower()):
                    return path, attribute
        return "", None

    def transpose(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        ndim = source.ndim
        name = op_name(node)
        if name == "permute":
            order = [_norm_dim(d, ndim) for d in node.args[1]]
        elif name in ("t", "numpy_T"):
            order = list(range(ndim))[::-1]
        elif name == "movedim":
            src = [_norm_dim(d, ndim) for d in _as_list(node.args[1])]
            dst = [_norm_dim(d, ndim) for d in _as_list(node.args[2])]
            return self.output(np.moveaxis(source, src, dst))
        else:
            first, second = _norm_dim(node.args[1], ndim), _norm_dim(node.args[2], ndim)
            order = list(range(ndim))
            order[first], order[second] = order[second], order[first]
        return self.output(np.transpose(source, order))

    def matmul(self, node: fx.Node) -> Any:
        left_arg, right_arg = node.args[0], node.args[1]
        weight = self.tensor_name(right_arg)
        out_shape = shape_of(node)
        if out_shape is None:
            return None
        if weight is not None and len(self.tensor_shape(weight)) == 2:
            source = self.labels(left_arg)
            in_atoms = self.slot_atoms(weight, 0, node)
            out_atoms = self.slot_atoms(weight, 1, node)
            self.result.producers.add(Slot(weight, 1))
            self.couple_index(in_atoms, source, source.ndim - 1, node, "input feature is fixed")
            return self.output(out_atoms.reshape((1,) * (len(out_shape) - 1) + (-1,)))
        if self.tensor_name(left_arg) is not None:
            return self.unknown(node, "matrix product with a parameter on the left")
        left, right = self.labels(left_arg), self.labels(right_arg)
        if left.ndim < 2 or right.ndim < 2:
            return self.unknown(node, "matrix-vector product")
        return self.output(self._matmul(node, left, right, len(out_shape)))

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
        out = self._matmul(node, canonical(scores, self.uf), value, ndim)
        return self.output(out)

    def cat(self, node: fx.Node) -> Any:
        inputs = list(node.args[0])
        out_shape = shape_of(node)
        if out_shape is None:
            return self.unknown(node)
        ndim = len(out_shape)
        dim = _norm_dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), ndim)
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
        dim = _norm_dim(node.args[1] if len(node.args) > 1 else 0, ndim)
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
        dim = _norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), len(shape))
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
        dim = _norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), len(shape))
        sizes = [int(v.shape[dim]) for v in node.meta["val"]]
        if dim in varying_dims(source) and len(sizes) > 1:
            self.poison(source, node, "split into parts of fixed sizes along channels "
                                      "(use torch.chunk for an even split)")
        return self._split_parts(node, source, dim, sizes)

    def unbind(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = _norm_dim(node.args[1] if len(node.args) > 1 else 0, len(shape))
        if dim in varying_dims(source):
            self.result.whole_hyperplanes.append((source, dim, self.where(node)))
        full = np.broadcast_to(source, tuple(shape[dim] if d == dim else s
                                             for d, s in enumerate(source.shape)))
        return [self.output(full.take(i, axis=dim)) for i in range(shape[dim])]

    def select(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        dim = _norm_dim(node.args[1], len(shape))
        index = int(node.args[2]) % shape[dim]
        if dim in varying_dims(source):
            self.result.whole_hyperplanes.append((source, dim, self.where(node)))
            return self.output(source.take(index, axis=dim))
        return self.output(source.take(0, axis=dim))

    def slice(self, node: fx.Node) -> Any:
        source = self.labels(node.args[0])
        shape = shape_of(node.args[0]) or ()
        out_shape = shape_of(node) or ()
        dim = _norm_dim(node.args[1] if len(node.args) > 1 else 0, len(shape))
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

    # ------------------------------------------------------------------- walk
    def _channelwise_scopes(self) -> dict[fx.Node, str]:
        """Nodes inside calls of modules registered as channel-wise black boxes -> call key."""
        from compressor.graph.handlers import handler_for

        scopes: dict[fx.Node, str] = {}
        for node in self.traced.graph.nodes:
            for key, path in module_stack(node):
                module = self.model.get_submodule(path) if path else self.model
                handler = handler_for(module)
                if path and handler is not None and handler.channelwise:
                    scopes[node] = key
                    break
        return scopes

    def _channelwise(self, key: str, nodes: list[fx.Node]) -> None:
        """Propagate through a channel-wise black box: outputs carry the input's channels."""
        from compressor.graph.handlers import handler_for

        inside = set(nodes)
        path = dict(module_stack(nodes[0]))[key]
        module = self.model.get_submodule(path)
        handler = handler_for(module)
        inputs = [arg for node in nodes for arg in node.all_input_nodes
                  if arg not in inside
                  and (arg.op != "placeholder" or arg.name in self.traced.inputs)]
        source = self.labels(inputs[0]) if inputs else fixed(0)
        dim = handler.channel_dim if handler else 1
        dim = dim + source.ndim if dim < 0 else dim
        for name, parameter in module.named_parameters():
            qualified = f"{path}.{name}"
            if parameter.ndim and source.ndim > dim and parameter.shape[0] == _width(inputs[0], dim):
                atoms = self.slot_atoms(qualified, 0, nodes[0])
                self.couple_index(atoms, source, dim, nodes[0], "channel is fixed")
        out = self.output(source)
        for node in nodes:
            self.values[node] = out if any(user not in inside for user in node.users) else None

    def run(self) -> Propagation:
        scopes = self._channelwise_scopes()
        members: dict[str, list[fx.Node]] = {}
        for node, key in scopes.items():
            members.setdefault(key, []).append(node)
        for node in self.traced.graph.nodes:
            if node in scopes:
                key = scopes[node]
                if members[key][0] is node:
                    self._channelwise(key, members[key])
                continue
            if node.op == "placeholder":
                if node.name in self.traced.inputs:
                    shape = shape_of(node)
                    self.values[node] = fixed(len(shape)) if shape is not None else None
            elif node.op == "call_function":
                self.values[node] = self.apply(node)
            elif node.op == "output":
                for arg in _node_args(node):
                    self.poison(self.value(arg), node, OUTPUT_REASON)
            elif node.op in ("get_attr", "call_module", "call_method"):
                self.values[node] = self.unknown(node)
        return self.result

    def apply(self, node: fx.Node) -> Any:
        name = op_name(node)
        if name in _IGNORED or (name not in self.rules and shape_of(node) is None
                                and not isinstance(node.meta.get("val"), (list, tuple))
                                and not any(isinstance(self.values.get(a), np.ndarray)
                                            for a in _node_args(node))):
            return None
        rule = self.rules.get(name)
        if rule is None:
            return self.unknown(node)
        try:
            return rule(node)
        except (IndexError, ValueError, TypeError, KeyError) as error:
            return self.unknown(node, f"could not analyse this operation ({error})")


def propagate(traced: TracedModel, model: nn.Module) -> Propagation:
    """Propagate channel labels through ``traced`` (captured from ``model``)."""
    return _Propagator(traced, model).run()


def _flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in _flatten(item)]
    return []


def _node_args(node: fx.Node) -> list[Any]:
    found: list[Any] = []

    def visit(arg: Any) -> None:
        if isinstance(arg, fx.Node):
            found.append(arg)
        elif isinstance(arg, (list, tuple)):
            for item in arg:
                visit(item)
        elif isinstance(arg, dict):
            for item in arg.values():
                visit(item)

    visit(node.args)
    visit(node.kwargs)
    return found


def _width(node: Any, dim: int) -> int:
    shape = shape_of(node) or ()
    return shape[dim] if len(shape) > dim else -1


def _extent(arg: Any, ndim: int) -> set[int]:
    shape = shape_of(arg) or ()
    offset = ndim - len(shape)
    return {offset + d for d, size in enumerate(shape) if size > 1}


def _norm_dim(dim: Any, ndim: int) -> int:
    dim = int(dim)
    return dim + ndim if dim < 0 else dim


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _dims_arg(node: fx.Node, position: int, ndim: int) -> list[int]:
    value = node.args[position] if len(node.args) > position else node.kwargs.get("dim")
    if value is None:
        return list(range(ndim))
    return [_norm_dim(d, ndim) for d in _as_list(value)]


def _get_tensor(model: nn.Module, name: str) -> Any:
    module_path, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    return getattr(module, attribute)

