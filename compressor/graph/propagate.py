"""Label propagation through an ATen graph: which parameter slices must be removed together.

Each operation of the traced forward pass either creates channels (a convolution's output
channels are new atoms), carries them (activations, pooling, reshapes), couples them (a residual
add unions the channels of its operands, a consumer's input slices are unioned with the channels
it reads) or forbids their removal (an unknown operation, a reduction over channels, the model
output). Rules are looked up by the ATen operator name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import fx, nn

from compressor.graph.atoms import AtomSpace, Slot, UnionFind
from compressor.graph.labels import (
    canonical,
    fixed,
    per_index,
)
from compressor.graph.rules import ElementwiseRules, LayerRules, ReductionRules, ShapeRules
from compressor.graph.rules.common import (
    Labels,
    NormUse,
    SizeAttribute,
    flatten,
    get_tensor,
    node_args,
    op_name,
    shape_of,
    width,
)
from compressor.graph.trace import TracedModel, module_of
from compressor.utils.modules import module_stack

__all__ = ["Propagation", "Propagator", "SizeAttribute", "NormUse", "propagate", "OUTPUT_REASON",
           "op_name", "shape_of"]

OUTPUT_REASON = "reaches the model output"


@dataclass
class Propagation:
    """Result of propagating labels: atoms, their sets, and what the compaction must know."""

    space: AtomSpace
    union_find: UnionFind
    producers: set[Slot] = field(default_factory=set)
    head_atoms: set[int] = field(default_factory=set)
    size_attributes: list[SizeAttribute] = field(default_factory=list)
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
    "_upsample_bilinear2d_aa", "native_dropout", "dropout_", "feature_dropout_", "alpha_dropout_",
    "feature_alpha_dropout", "feature_alpha_dropout_",
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


class Propagator(LayerRules, ElementwiseRules, ReductionRules, ShapeRules):
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
        for array in flatten(labels):
            self.uf.poison_atoms(array, f"{self.where(node)}: {why}")

    def tensor_name(self, arg: Any) -> str | None:
        """Qualified name of the parameter/buffer a node argument refers to, if any."""
        if isinstance(arg, fx.Node) and arg.op == "placeholder":
            return self.traced.tensors.get(arg.name)
        return None

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(get_tensor(self.model, name).shape)

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
            if name is not None and shape is not None and 0 not in shape:
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
        for arg in node_args(node):
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
        rules["addmm"] = self.addmm
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
        rules["index"] = self.index
        rules["_unsafe_index"] = self.index
        rules["index_select"] = self.index_select
        rules["narrow"] = self.slice
        rules["getitem"] = self.getitem
        rules["repeat"] = self.repeat
        rules["constant_pad_nd"] = self.pad
        rules["pad"] = self.pad
        rules["channel_shuffle"] = self.channel_shuffle
        rules["native_channel_shuffle"] = self.channel_shuffle
        rules["type_as"] = self.unary
        return rules






































    # ------------------------------------------------------------------- walk
    def _black_box_scopes(self) -> dict[fx.Node, str]:
        """Nodes inside calls of modules whose handler propagates through them as a black box
        (channel-wise layers, ``nn.MultiheadAttention``) -> call key."""
        from compressor.graph.handlers import handler_for

        scopes: dict[fx.Node, str] = {}
        for node in self.traced.graph.nodes:
            for key, path, _ in module_stack(node):
                module = self.model.get_submodule(path) if path else self.model
                handler = handler_for(module)
                if path and handler is not None and (handler.channelwise or handler.propagate):
                    scopes[node] = key
                    break
        return scopes

    def _black_box(self, key: str, nodes: list[fx.Node]) -> None:
        """Propagate through one call of a black-box module."""
        from compressor.graph.handlers import handler_for

        inside = set(nodes)
        path = next(p for k, p, _ in module_stack(nodes[0]) if k == key)
        module = self.model.get_submodule(path)
        handler = handler_for(module)
        inputs = list(dict.fromkeys(
            arg for node in nodes for arg in node.all_input_nodes
            if arg not in inside and (arg.op != "placeholder" or arg.name in self.traced.inputs)))
        outputs = [node for node in nodes if any(user not in inside for user in node.users)]
        try:
            if handler is not None and handler.propagate is not None:
                labels = handler.propagate(self, module, path, inputs, outputs)
            else:
                labels = self._channelwise(module, path, handler, inputs, nodes[0])
        except Exception as error:  # noqa: BLE001 - an exclusion with the reason, never a crash
            for arg in inputs:
                self.poison(self.value(arg), nodes[0], f"could not analyse `{path}` "
                                                       f"({type(error).__name__}: {error})")
            labels = {node: fixed(len(shape_of(node) or ())) for node in outputs}
        for node in nodes:
            self.values[node] = labels[node] if node in outputs else None

    def _channelwise(self, module: nn.Module, path: str, handler: Any, inputs: list[fx.Node],
                     first: fx.Node) -> dict[fx.Node, Any]:
        """A channel-wise black box: outputs carry the input's channels."""
        source = self.labels(inputs[0]) if inputs else fixed(0)
        dim = handler.channel_dim if handler else 1
        dim = dim + source.ndim if dim < 0 else dim
        for name, parameter in module.named_parameters():
            qualified = f"{path}.{name}"
            if parameter.ndim and source.ndim > dim and parameter.shape[0] == width(inputs[0], dim):
                atoms = self.slot_atoms(qualified, 0, first)
                self.couple_index(atoms, source, dim, first, "channel is fixed")
        out = self.output(source)
        return defaultdict(lambda: out)

    def run(self) -> Propagation:
        scopes = self._black_box_scopes()
        members: dict[str, list[fx.Node]] = {}
        for node, key in scopes.items():
            members.setdefault(key, []).append(node)
        for node in self.traced.graph.nodes:
            if node in scopes:
                key = scopes[node]
                if members[key][0] is node:
                    self._black_box(key, members[key])
                continue
            if node.op == "placeholder":
                if node.name in self.traced.inputs:
                    shape = shape_of(node)
                    self.values[node] = fixed(len(shape)) if shape is not None else None
            elif node.op == "call_function":
                self.values[node] = self.apply(node)
            elif node.op == "output":
                for arg in node_args(node):
                    self.poison(self.value(arg), node, OUTPUT_REASON)
            elif node.op in ("get_attr", "call_module", "call_method"):
                self.values[node] = self.unknown(node)
        return self.result

    def apply(self, node: fx.Node) -> Any:
        name = op_name(node)
        if name in _IGNORED or (name not in self.rules and shape_of(node) is None
                                and not isinstance(node.meta.get("val"), (list, tuple))
                                and not any(isinstance(self.values.get(a), np.ndarray)
                                            for a in node_args(node))):
            return None
        rule = self.rules.get(name)
        if rule is None:
            return self.unknown(node)
        try:
            return rule(node)
        except Exception as error:  # noqa: BLE001 - an exclusion with the reason, never a crash
            return self.unknown(node, f"could not analyse this operation "
                                      f"({type(error).__name__}: {error})")


def propagate(traced: TracedModel, model: nn.Module) -> Propagation:
    """Propagate channel labels through ``traced`` (captured from ``model``)."""
    return Propagator(traced, model).run()


