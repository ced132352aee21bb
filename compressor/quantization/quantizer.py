"""``OrtQuantizer``: a torchao PT2E quantizer whose layout ONNX Runtime turns into int8 kernels.

ONNX Runtime fuses ``DequantizeLinear -> op -> QuantizeLinear`` groups into integer kernels only
when each group is complete, so the quantizer annotates whole groups on the ATen graph:

* convolutions and linear layers (including ``addmm`` with a weight parameter, the form of
  GPT-2's ``Conv1D``): uint8 input, int8 per-channel weight, int32 bias and their **own** uint8
  output, taken after a following batch norm (folded) and ReLU / ReLU6 (absorbed
  by the output's quantization range) -> ``QLinearConv`` / ``QGemm`` / ``QLinearMatMul``;
* residual additions (with a following ReLU), element-wise products, concatenations and average
  pooling: uint8 inputs and output -> ``QLinearAdd`` / ``QLinearMul`` / ``QLinearConcat`` /
  ``QLinearGlobalAveragePool``;
* activation-by-activation matrix products (attention) -> ``QLinearMatMul``; fused attention
  is expanded into its matrix products first (:mod:`compressor.quantization.attention`);
  additions that feed a softmax (attention masks and biases, which may hold -inf or the float
  minimum) stay in float;
* max pooling, shape-only ops (reshape, flatten, permute, ...) and dropout share their input's
  quantization, so the dequantize/quantize pairs around them are redundant (ONNX Runtime drops
  them; a pair with different parameters would be merged by ONNX Runtime and change results).

Operations of modules matched by ``keep_float`` patterns are not annotated and stay in float.
The same quantizer serves QAT (fake quantization) and PTQ (observers).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import (
    QuantizationAnnotation,
    Quantizer,
    SharedQuantizationSpec,
)
from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

from compressor.quantization.config import FIRST_LAYER, LAST_LAYER, QuantizationConfig
from compressor.quantization.specs import SchemeSpecs, bias_spec, build_specs
from compressor.utils.modules import innermost_module_path, module_stack
from compressor.utils.names import matches

__all__ = ["OrtQuantizer", "node_module", "quantized_layers"]

aten = torch.ops.aten

_CONV = {aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
         aten.conv2d.padding, aten.conv3d.padding}
_LINEAR = {aten.linear.default}
_ADDMM = {aten.addmm.default}
_BATCH_NORM = {aten.batch_norm.default, aten._native_batch_norm_legit.default,
               aten._native_batch_norm_legit_no_training.default}
_RELU = {aten.relu.default, aten.relu_.default}
_HARDTANH = {aten.hardtanh.default, aten.hardtanh_.default}
_ADD = {aten.add.Tensor, aten.add_.Tensor}
_MUL = {aten.mul.Tensor, aten.mul_.Tensor}
_CAT = {aten.cat.default, aten.concat.default}
_MATMUL = {aten.matmul.default, aten.bmm.default}
_AVG_POOL = {aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default}
_SHARED = {aten.max_pool2d.default, aten.flatten.using_ints, aten.reshape.default,
           aten.view.default, aten.permute.default, aten.transpose.int, aten.squeeze.dim,
           aten.squeeze.dims, aten.unsqueeze.default, aten.contiguous.default,
           aten._unsafe_view.default, aten.dropout.default, aten.feature_dropout.default,
           aten.alpha_dropout.default, aten.clone.default}


def node_module(node: Node) -> str | None:
    """Dotted path of the innermost module that produced ``node`` (``""``: the root)."""
    return innermost_module_path(node)


def _module_paths(node: Node) -> list[str]:
    return [path for _, path, _ in module_stack(node)]


def _is_float_tensor(arg: Any) -> TypeGuard[Node]:
    """A float tensor with elements (an empty one, such as a key/value cache before its first
    entry, never gives an observer a range)."""
    if not isinstance(arg, Node):
        return False
    value = arg.meta.get("val")
    return (isinstance(value, torch.Tensor) and value.is_floating_point()
            and not any(isinstance(size, int) and size == 0 for size in value.shape))


# Positions of (activation, weight, bias) in the arguments of each weighted op, and the weight
# axis of its output channels: addmm(bias, input, weight) multiplies by an (in, out) weight.
_WEIGHTED_LAYOUT = {**{op: ((0, 1, 2), 0) for op in _CONV | _LINEAR},
                    **{op: ((1, 2, 0), 1) for op in _ADDMM}}
_SOFTMAX = {aten.softmax.int, aten._softmax.default, aten._safe_softmax.default}


def _is_weighted(node: Node) -> bool:
    return node.op == "call_function" and node.target in _WEIGHTED_LAYOUT


def quantized_layers(model: GraphModule) -> list[Node]:
    """Convolution and linear nodes of a captured graph, in execution order."""
    return [node for node in model.graph.nodes if _is_weighted(node)]


def _is_weight(node: Node, argument: Any) -> bool:
    """Whether ``argument`` can be quantized as the weight of the weighted op ``node``: for
    ``addmm``, which also multiplies two activations, only a parameter of the model."""
    if not isinstance(argument, Node):
        return False
    return node.target not in _ADDMM or argument.op == "get_attr"


def _single_user(node: Node) -> Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _absorbable_activation(node: Node) -> bool:
    """ReLU, or ReLU6-like hardtanh with a lower bound of 0: the uint8 range of the following
    quantization clips exactly like it, so ONNX Runtime drops the op after fusion."""
    if node.op != "call_function":
        return False
    if node.target in _RELU:
        return True
    if node.target in _HARDTANH:
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        return bool(low == 0)
    return False


def _batch_norm_output(node: Node) -> Node | None:
    """The tensor output of a batch-norm user of ``node``, if ``node`` feeds exactly one."""
    user = _single_user(node)
    if user is None or user.op != "call_function" or user.target not in _BATCH_NORM:
        return None
    if user.target is aten.batch_norm.default:
        return user
    getitems = [u for u in user.users if u.target is operator.getitem and u.args[1] == 0]
    return getitems[0] if len(getitems) == 1 else None


class OrtQuantizer(Quantizer):
    """PT2E quantizer for ONNX Runtime (see the module docstring).

    Args:
        config: What to quantize (default :class:`QuantizationConfig`).
        is_qat: Fake quantization for training (``True``) or observers for calibration.

    Attributes:
        annotated: Module paths of the convolutions / linear layers annotated by the last
            :meth:`annotate` call.
        kept_float: Module paths of the convolutions / linear layers left in float.
    """

    def __init__(self, config: QuantizationConfig | None = None, is_qat: bool = False) -> None:
        super().__init__()
        self.config = config or QuantizationConfig()
        self.specs = build_specs(self.config, is_qat)
        self.annotated: list[str] = []
        self.kept_float: list[str] = []

    def annotate(self, model: GraphModule) -> GraphModule:
        """Annotate ``model``'s graph in place (``prepare_pt2e`` / ``prepare_qat_pt2e`` call it)."""
        self.annotated, self.kept_float = [], []
        _Annotator(model, self.config, self.specs).run(self)
        return model

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: every annotation is one ONNX Runtime can fuse."""


class _Annotator:
    """One annotation pass over a captured graph."""

    def __init__(self, model: GraphModule, config: QuantizationConfig, specs: SchemeSpecs) -> None:
        self.model = model
        self.config = config
        self.specs = specs
        self.patterns = self._resolve_patterns(config.keep_float)
        self.quantized_outputs: set[Node] = set()
        self.done: set[Node] = set()

    def _resolve_patterns(self, patterns: Iterable[str]) -> list[str]:
        found = (node_module(n) for n in quantized_layers(self.model))
        layers = [layer for layer in found if layer is not None]
        resolved = []
        for pattern in patterns:
            if pattern == FIRST_LAYER and layers:
                resolved.append(layers[0])
            elif pattern == LAST_LAYER and layers:
                resolved.append(layers[-1])
            else:
                resolved.append(pattern)
        return resolved

    def keeps_float(self, node: Node) -> bool:
        """Whether ``node`` belongs to a module matched by a ``keep_float`` pattern."""
        paths = _module_paths(node)
        return any(matches(pattern, path) for path in paths for pattern in self.patterns)

    # -- annotation helpers ------------------------------------------------------------------

    def _annotate(self, node: Node, inputs: dict[Node, Any], output: Any = None) -> None:
        annotation = node.meta.get(Q_ANNOTATION_KEY) or QuantizationAnnotation()
        annotation.input_qspec_map.update(inputs)
        if output is not None:
            annotation.output_qspec = output
        annotation._annotated = True
        node.meta[Q_ANNOTATION_KEY] = annotation

    def _mark(self, nodes: Iterable[Node]) -> None:
        for node in nodes:
            self.done.add(node)
            annotation = node.meta.get(Q_ANNOTATION_KEY) or QuantizationAnnotation()
            annotation._annotated = True
            node.meta[Q_ANNOTATION_KEY] = annotation

    def _output_chain(self, node: Node, allow_activation: bool = True) -> list[Node]:
        """``node`` followed by a batch norm and an absorbable activation, when they are its
        only consumers; the last element carries the output quantization."""
        chain = [node]
        bn = _batch_norm_output(node)
        if bn is not None:
            batch_norm = _single_user(node)
            if batch_norm is not None and batch_norm is not bn:  # op with getitem outputs
                chain.append(batch_norm)
            chain.append(bn)
        following = _single_user(chain[-1])
        if allow_activation and following is not None and _absorbable_activation(following):
            chain.append(following)
        return chain

    # -- rules ---------------------------------------------------------------------------------

    def _weighted(self, node: Node, owner: Any) -> None:
        (activation_at, weight_at, bias_at), axis = _WEIGHTED_LAYOUT[node.target]
        activation, weight = node.args[activation_at], node.args[weight_at]
        if not _is_float_tensor(activation) or not _is_weight(node, weight):
            return
        if self.keeps_float(node):
            owner.kept_float.append(node_module(node) or node.name)
            return
        weight_spec = self.specs.weight if axis == 0 else self.specs.weight_columns
        inputs: dict[Node, Any] = {activation: self.specs.activation, weight: weight_spec}
        bias = node.args[bias_at] if len(node.args) > bias_at else None
        if isinstance(bias, Node):
            inputs[bias] = bias_spec((activation, node), (weight, node))
        chain = self._output_chain(node)
        self._annotate(node, inputs)
        self._annotate(chain[-1], {}, self.specs.activation)
        self._mark(chain)
        self.quantized_outputs.add(chain[-1])
        owner.annotated.append(node_module(node) or node.name)

    def _binary(self, node: Node, absorb_activation: bool) -> None:
        operands = [arg for arg in node.args[:2] if _is_float_tensor(arg)]
        if len(operands) != 2 or operands[0] is operands[1] or self.keeps_float(node):
            return
        if any(user.target in _SOFTMAX for user in node.users):
            return  # an attention mask or bias: its -inf / float-min entries have no uint8 range
        chain = self._output_chain(node, absorb_activation) if absorb_activation else [node]
        self._annotate(node, {arg: self.specs.activation for arg in operands})
        self._annotate(chain[-1], {}, self.specs.activation)
        self._mark(chain)
        self.quantized_outputs.add(chain[-1])

    def _concat(self, node: Node) -> None:
        tensors = node.args[0]
        if not isinstance(tensors, (list, tuple)) or self.keeps_float(node):
            return
        inputs = [t for t in tensors if _is_float_tensor(t)]
        if len(inputs) != len(tensors):
            return
        self._annotate(node, {t: self.specs.activation for t in inputs}, self.specs.activation)
        self._mark([node])
        self.quantized_outputs.add(node)

    def _unary(self, node: Node) -> None:
        source = node.args[0]
        if not _is_float_tensor(source) or self.keeps_float(node):
            return
        self._annotate(node, {source: self.specs.activation}, self.specs.activation)
        self._mark([node])
        self.quantized_outputs.add(node)

    def _shared(self, node: Node) -> None:
        """Shape-only ops and max pooling on an already quantized tensor keep its quantization."""
        source = node.args[0]
        if not isinstance(source, Node) or source not in self.quantized_outputs \
                or self.keeps_float(node):
            return
        self._annotate(node, {source: self.specs.activation},
                       SharedQuantizationSpec((source, node)))
        self._mark([node])
        self.quantized_outputs.add(node)

    def run(self, owner: Any) -> None:
        rules: list[tuple[set[Any], Callable[[Node], None], bool]] = [
            (set(_WEIGHTED_LAYOUT), lambda n: self._weighted(n, owner), True),
            (_ADD, lambda n: self._binary(n, True), self.config.quantize_elementwise),
            (_MUL, lambda n: self._binary(n, False), self.config.quantize_elementwise),
            (_MATMUL, lambda n: self._binary(n, False), self.config.quantize_matmul),
            (_CAT, self._concat, self.config.quantize_elementwise),
            (_AVG_POOL, self._unary, self.config.quantize_elementwise),
            (_SHARED, self._shared, True),
        ]
        for node in self.model.graph.nodes:
            if node.op != "call_function" or node in self.done:
                continue
            for targets, rule, enabled in rules:
                if enabled and node.target in targets:
                    rule(node)
                    break
