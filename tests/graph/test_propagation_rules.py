"""The label-propagation rules of the dependency graph, one operation at a time.

Every case traces a tiny model the way the library does (``trace_model``: non-strict
``torch.export``), propagates labels (``Propagator``) and reads the result the way compaction
does: which index of one parameter slot is removed together with which index of another
(same set of the union-find), which sets cannot be removed and why, and the label layout of an
operation's output.

Inputs are ``(2, 3, 2, 3)`` (batch, channels, height 2, width 3) unless a case says otherwise: a
non-square image catches height/width mix-ups, a batch of 2 keeps the batch dimension real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.graph.atoms import Slot
from compressor.graph.labels import varying_dims
from compressor.graph.propagate import OUTPUT_REASON, Propagation, Propagator, op_name
from compressor.graph.trace import trace_model

H, W = 2, 3
IMAGE = (2, 3, H, W)
PERM = [2, 0, 3, 1]


class Net(nn.Module):
    """A model made of named submodules and a forward function ``body(self, x)``."""

    def __init__(self, body: Callable[..., Any], modules: dict[str, nn.Module],
                 params: dict[str, torch.Tensor] | None = None,
                 buffers: dict[str, torch.Tensor] | None = None, **attributes: Any) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        for name, value in (params or {}).items():
            self.register_parameter(name, nn.Parameter(value))
        for name, value in (buffers or {}).items():
            self.register_buffer(name, value)
        for name, value in attributes.items():
            setattr(self, name, value)
        self.body = body

    def forward(self, x):
        return self.body(self, x)


@dataclass
class Case:
    body: Callable[..., Any]
    modules: dict[str, nn.Module]
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: Callable[[], torch.Tensor] = lambda: torch.randn(IMAGE)
    attributes: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Net:
        return Net(self.body, self.modules, self.params, self.buffers, **self.attributes).eval()


def run(case: Case) -> tuple[Propagator, Propagation]:
    model, inputs = case.build(), case.inputs()
    propagator = Propagator(trace_model(model, (inputs,)), model)
    return propagator, propagator.run()


def slot(name: str) -> Slot:
    """``"conv.weight:0"`` -> slice slot along dim 0; ``"gamma:e"`` -> element slot."""
    tensor, _, dim = name.rpartition(":")
    return Slot(tensor, -1, element=True) if dim == "e" else Slot(tensor, int(dim))


def atom_ids(prop: Propagation, name: str) -> np.ndarray:
    start, length = prop.space.range_of(slot(name))
    return np.arange(start, start + length)


def coupling(prop: Propagation, first: str, second: str) -> np.ndarray:
    """``M[i, j]``: index ``i`` of slot ``first`` is removed together with index ``j`` of ``second``."""
    uf = prop.union_find
    a = [uf.find(int(i)) for i in atom_ids(prop, first)]
    b = [uf.find(int(j)) for j in atom_ids(prop, second)]
    return np.array([[x == y for y in b] for x in a])


def reasons(prop: Propagation, name: str) -> list[str | None]:
    return [prop.union_find.reason(int(a)) for a in atom_ids(prop, name)]


def expected(prop: Propagation, first: str, second: str, relation: Callable[[int, int], bool]
             ) -> np.ndarray:
    n, m = len(atom_ids(prop, first)), len(atom_ids(prop, second))
    return np.array([[bool(relation(i, j)) for j in range(m)] for i in range(n)])


def conv(cin: int, cout: int, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, **kwargs)


def same(i: int, j: int) -> bool:
    return i == j


def tokens() -> torch.Tensor:
    return torch.randn(2, 5, 6)  # (batch, sequence, features)


# ----------------------------------------------------------------------------------------------
# Channel correspondence: (first slot, second slot, which indices go together); every set
# involved stays removable.
# ----------------------------------------------------------------------------------------------
CORRESPONDENCE = {
    # element-wise unary ops carry the channels unchanged
    "relu": (Case(lambda m, x: m.b(torch.relu(m.a(x))), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    "gelu": (Case(lambda m, x: m.b(F.gelu(m.a(x))), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    "sigmoid": (Case(lambda m, x: m.b(torch.sigmoid(m.a(x))), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    "hardswish": (Case(lambda m, x: m.b(F.hardswish(m.a(x))), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    "clamp": (Case(lambda m, x: m.b(m.a(x).clamp(-1, 1)), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    "clone_to_contiguous": (Case(lambda m, x: m.b(m.a(x).clone().to(torch.float32).contiguous()), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    "upsample_nearest": (Case(lambda m, x: m.b(F.interpolate(m.a(x), scale_factor=2.0, mode="nearest")), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "b.weight:1", same),
    # layers: producers, consumers and per-channel parameters
    "linear_chain_on_tokens": (Case(lambda m, x: m.b(torch.relu(m.a(x))), {"a": nn.Linear(6, 4), "b": nn.Linear(4, 2)}, inputs=tokens), "a.weight:0", "b.weight:1", same),
    "linear_bias_follows_its_output": (Case(lambda m, x: m.b(m.a(x)), {"a": nn.Linear(6, 4), "b": nn.Linear(4, 2)}, inputs=tokens), "a.weight:0", "a.bias:0", same),
    "conv_bias_follows_its_output": (Case(lambda m, x: m.b(m.a(x)), {"a": conv(3, 4), "b": conv(4, 2)}), "a.weight:0", "a.bias:0", same),
    "batch_norm_weight": (Case(lambda m, x: m.b(m.bn(m.a(x))), {"a": conv(3, 4), "bn": nn.BatchNorm2d(4), "b": conv(4, 2)}), "a.weight:0", "bn.weight:0", same),
    "batch_norm_running_mean": (Case(lambda m, x: m.b(m.bn(m.a(x))), {"a": conv(3, 4), "bn": nn.BatchNorm2d(4), "b": conv(4, 2)}), "a.weight:0", "bn.running_mean:0", same),
    "batch_norm_to_consumer": (Case(lambda m, x: m.b(m.bn(m.a(x))), {"a": conv(3, 4), "bn": nn.BatchNorm2d(4), "b": conv(4, 2)}), "bn.bias:0", "b.weight:1", same),
    "prelu_per_channel": (Case(lambda m, x: m.b(m.act(m.a(x))), {"a": conv(3, 4), "act": nn.PReLU(4), "b": conv(4, 2)}), "a.weight:0", "act.weight:0", same),
    "group_norm_unions_each_group": (Case(lambda m, x: m.b(m.gn(m.a(x))), {"a": conv(3, 4), "gn": nn.GroupNorm(2, 4), "b": conv(4, 2)}), "a.weight:0", "gn.weight:0", lambda i, j: i // 2 == j // 2),
    "layer_norm_over_features": (Case(lambda m, x: m.b(m.ln(m.a(x))), {"a": nn.Linear(6, 4), "ln": nn.LayerNorm(4), "b": nn.Linear(4, 2)}, inputs=tokens), "a.weight:0", "ln.weight:0", same),
    "embedding_columns_feed_linear": (Case(lambda m, x: m.b(m.emb(x)), {"emb": nn.Embedding(10, 4), "b": nn.Linear(4, 2)}, inputs=lambda: torch.randint(0, 10, (2, 5))), "emb.weight:1", "b.weight:1", same),
    "grouped_conv_reads_channel_modulo_group_width": (Case(lambda m, x: m.b(m.g(m.a(x))), {"a": conv(3, 4), "g": conv(4, 4, groups=2), "b": conv(4, 2)}), "a.weight:0", "g.weight:1", lambda i, j: i % 2 == j),
    "grouped_conv_outputs_at_same_offset_go_together": (Case(lambda m, x: m.b(m.g(m.a(x))), {"a": conv(3, 4), "g": conv(4, 4, groups=2), "b": conv(4, 2)}), "g.weight:0", "g.weight:0", lambda i, j: i % 2 == j % 2),
    "depthwise_conv": (Case(lambda m, x: m.b(m.dw(m.a(x))), {"a": conv(3, 4), "dw": nn.Conv2d(4, 4, 3, padding=1, groups=4), "b": conv(4, 2)}), "a.weight:0", "dw.weight:0", same),
    "depthwise_conv_with_multiplier": (Case(lambda m, x: m.b(m.dw(m.a(x))), {"a": conv(3, 4), "dw": nn.Conv2d(4, 8, 3, padding=1, groups=4), "b": conv(8, 2)}), "a.weight:0", "dw.weight:0", lambda i, j: j // 2 == i),
    # reshapes: conv channel c owns features c*H*W .. (c+1)*H*W-1 of a channels-first flatten
    "flatten": (Case(lambda m, x: m.fc(m.a(x).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j // (H * W) == i),
    "torch_flatten": (Case(lambda m, x: m.fc(torch.flatten(m.a(x), 1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j // (H * W) == i),
    "view": (Case(lambda m, x: m.fc(m.a(x).view(x.shape[0], -1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j // (H * W) == i),
    "reshape": (Case(lambda m, x: m.fc(m.a(x).reshape(2, -1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j // (H * W) == i),
    "flatten_spatial_then_linear_over_channels": (Case(lambda m, x: m.fc(m.a(x).flatten(2).transpose(1, 2)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "expand_then_flatten": (Case(lambda m, x: m.fc(m.a(x).mean((2, 3), keepdim=True).expand(-1, -1, H, W).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j // (H * W) == i),
    "unsqueeze_then_flatten": (Case(lambda m, x: m.fc(m.a(x).mean((2, 3)).unsqueeze(1).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "squeeze": (Case(lambda m, x: m.fc(m.a(x).amax((2, 3), keepdim=True).squeeze(-1).squeeze(-1)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    # transposes move the channel dimension; a flatten afterwards interleaves the channels
    "permute_channels_last_then_flatten": (Case(lambda m, x: m.fc(m.a(x).permute(0, 2, 3, 1).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j % 4 == i),
    "transpose_channels_height_then_flatten": (Case(lambda m, x: m.fc(m.a(x).transpose(1, 2).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: (j // W) % 4 == i),
    "movedim_then_flatten": (Case(lambda m, x: m.fc(torch.movedim(m.a(x), 1, -1).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j % 4 == i),
    "permute_channels_last_linear": (Case(lambda m, x: m.fc(m.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "t_of_a_matrix": (Case(lambda m, x: m.fc(m.a(x).mean((2, 3)).t().t()), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    # cat offsets every later input by the widths before it
    "cat_first_input": (Case(lambda m, x: m.c(torch.cat([m.a(x), m.b(x)], 1)), {"a": conv(3, 4), "b": conv(3, 2), "c": conv(6, 2)}), "a.weight:0", "c.weight:1", same),
    "cat_second_input_is_offset": (Case(lambda m, x: m.c(torch.cat([m.a(x), m.b(x)], 1)), {"a": conv(3, 4), "b": conv(3, 2), "c": conv(6, 2)}), "b.weight:0", "c.weight:1", lambda i, j: j == i + 4),
    "cat_reversed_order": (Case(lambda m, x: m.c(torch.cat([m.b(x), m.a(x)], dim=1)), {"a": conv(3, 4), "b": conv(3, 2), "c": conv(6, 2)}), "a.weight:0", "c.weight:1", lambda i, j: j == i + 2),
    "cat_negative_dim_on_features": (Case(lambda m, x: m.c(torch.cat([m.a(x), m.b(x)], -1)), {"a": nn.Linear(6, 4), "b": nn.Linear(6, 2), "c": nn.Linear(6, 2)}, inputs=tokens), "b.weight:0", "c.weight:1", lambda i, j: j == i + 4),
    "cat_along_height_couples_the_branches": (Case(lambda m, x: m.c(torch.cat([m.a(x), m.b(x)], 2)), {"a": conv(3, 4), "b": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "b.weight:0", same),
    "stack_then_flatten_first": (Case(lambda m, x: m.fc(torch.stack([m.a(x), m.b(x)], 1).flatten(1)), {"a": conv(3, 4), "b": conv(3, 4), "fc": nn.Linear(2 * 4 * H * W, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j < 4 * H * W and j // (H * W) == i),
    "stack_then_flatten_second": (Case(lambda m, x: m.fc(torch.stack([m.a(x), m.b(x)], 1).flatten(1)), {"a": conv(3, 4), "b": conv(3, 4), "fc": nn.Linear(2 * 4 * H * W, 2)}), "b.weight:0", "fc.weight:1", lambda i, j: j >= 4 * H * W and (j - 4 * H * W) // (H * W) == i),
    # chunk/split: equal parts stay equal, so position i of every part is removed together
    "chunk_couples_equal_positions": (Case(lambda m, x: m.c(m.a(x).chunk(2, dim=1)[0]), {"a": conv(3, 6), "c": conv(3, 2)}), "a.weight:0", "c.weight:1", lambda i, j: i % 3 == j),
    "chunk_parts_added": (Case(lambda m, x: m.c(sum(m.a(x).chunk(3, 1))), {"a": conv(3, 6), "c": conv(2, 2)}), "a.weight:0", "a.weight:0", lambda i, j: i % 2 == j % 2),
    "split_with_size_attribute": (Case(lambda m, x: m.c(m.a(x).split(m.split_size, 1)[1]), {"a": conv(3, 6), "c": conv(3, 2)}, attributes={"split_size": 3}), "a.weight:0", "c.weight:1", lambda i, j: i % 3 == j),
    "unbind_along_height": (Case(lambda m, x: m.fc(m.a(x).unbind(2)[1].mean(-1)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    # binary element-wise ops couple the channels of both operands
    "residual_add": (Case(lambda m, x: m.c(m.b(m.a(x)) + m.a(x)), {"a": conv(3, 4), "b": conv(4, 4), "c": conv(4, 2)}), "a.weight:0", "b.weight:0", same),
    "residual_add_to_consumer": (Case(lambda m, x: m.c(m.b(m.a(x)) + m.a(x)), {"a": conv(3, 4), "b": conv(4, 4), "c": conv(4, 2)}), "b.weight:0", "c.weight:1", same),
    "sub": (Case(lambda m, x: m.c(m.a(x) - m.b(x)), {"a": conv(3, 4), "b": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "b.weight:0", same),
    "mul_gate": (Case(lambda m, x: m.c(m.a(x) * torch.sigmoid(m.b(x))), {"a": conv(3, 4), "b": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "b.weight:0", same),
    "maximum": (Case(lambda m, x: m.c(torch.maximum(m.a(x), m.b(x))), {"a": conv(3, 4), "b": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "b.weight:0", same),
    "where": (Case(lambda m, x: m.c(torch.where(x[:, :1] > 0, m.a(x), m.b(x))), {"a": conv(3, 4), "b": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "b.weight:0", same),
    "add_broadcast_channel_statistics": (Case(lambda m, x: m.c(m.a(x) - m.a(x).mean((2, 3), keepdim=True)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    "squeeze_excitation_gate": (Case(lambda m, x: m.c(m.a(x) * torch.sigmoid(m.se(m.a(x).mean((2, 3), keepdim=True)))), {"a": conv(3, 4), "se": conv(4, 4), "c": conv(4, 2)}), "se.weight:0", "a.weight:0", same),
    "scale_parameter_elements": (Case(lambda m, x: m.c(m.a(x) * m.gamma.view(1, -1, 1, 1)), {"a": conv(3, 4), "c": conv(4, 2)}, params={"gamma": torch.ones(4)}), "a.weight:0", "gamma:e", same),
    "scalar_multiplier_keeps_channels": (Case(lambda m, x: m.c(m.a(x) * 0.5 + 1.0), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    # reductions and pooling over positions keep the channels
    "mean_over_positions": (Case(lambda m, x: m.fc(m.a(x).mean((2, 3))), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "sum_keepdim_then_flatten": (Case(lambda m, x: m.fc(m.a(x).sum((2, 3), keepdim=True).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "max_over_sequence": (Case(lambda m, x: m.fc(m.a(x).amax(1)), {"a": nn.Linear(6, 4), "fc": nn.Linear(4, 2)}, inputs=tokens), "a.weight:0", "fc.weight:1", same),
    "adaptive_avg_pool": (Case(lambda m, x: m.fc(F.adaptive_avg_pool2d(m.a(x), 1).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "max_pool_keeps_channels": (Case(lambda m, x: m.c(F.max_pool2d(m.a(x), (1, 2))), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    "avg_pool_then_flatten": (Case(lambda m, x: m.fc(F.avg_pool2d(m.a(x), (1, W)).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(4 * H, 2)}), "a.weight:0", "fc.weight:1", lambda i, j: j // H == i),
    "softmax_over_positions": (Case(lambda m, x: m.c(torch.softmax(m.a(x), -1)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    "cumsum_over_positions": (Case(lambda m, x: m.c(m.a(x).cumsum(2)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    "flip_positions": (Case(lambda m, x: m.c(m.a(x).flip(-1)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    # matrix products
    "matmul_with_parameter_reads_its_rows": (Case(lambda m, x: m.fc(m.a(x).mean((2, 3)) @ m.w), {"a": conv(3, 4), "fc": nn.Linear(5, 2)}, params={"w": torch.randn(4, 5)}), "a.weight:0", "w:0", same),
    "matmul_with_parameter_produces_its_columns": (Case(lambda m, x: m.fc(m.a(x).mean((2, 3)) @ m.w), {"a": conv(3, 4), "fc": nn.Linear(5, 2)}, params={"w": torch.randn(4, 5)}), "w:1", "fc.weight:1", same),
    "addmm_bias_follows_columns": (Case(lambda m, x: m.fc(torch.addmm(m.bias, m.a(x).mean((2, 3)), m.w)), {"a": conv(3, 4), "fc": nn.Linear(5, 2)}, params={"w": torch.randn(4, 5), "bias": torch.zeros(5)}), "w:1", "bias:0", same),
    "addmm_reads_rows": (Case(lambda m, x: m.fc(torch.addmm(m.bias, m.a(x).mean((2, 3)), m.w)), {"a": conv(3, 4), "fc": nn.Linear(5, 2)}, params={"w": torch.randn(4, 5), "bias": torch.zeros(5)}), "a.weight:0", "w:0", same),
    "matmul_contracts_query_and_key": (Case(lambda m, x: m.o((m.q(x) @ m.k(x).transpose(-1, -2)).softmax(-1) @ m.v(x)), {"q": nn.Linear(6, 4), "k": nn.Linear(6, 4), "v": nn.Linear(6, 3), "o": nn.Linear(3, 2)}, inputs=tokens), "q.weight:0", "k.weight:0", same),
    "matmul_carries_value_columns": (Case(lambda m, x: m.o((m.q(x) @ m.k(x).transpose(-1, -2)).softmax(-1) @ m.v(x)), {"q": nn.Linear(6, 4), "k": nn.Linear(6, 4), "v": nn.Linear(6, 3), "o": nn.Linear(3, 2)}, inputs=tokens), "v.weight:0", "o.weight:1", same),
    "bmm_contracts": (Case(lambda m, x: m.o(torch.bmm(torch.bmm(m.q(x), m.k(x).transpose(1, 2)), m.v(x))), {"q": nn.Linear(6, 4), "k": nn.Linear(6, 4), "v": nn.Linear(6, 3), "o": nn.Linear(3, 2)}, inputs=tokens), "q.weight:0", "k.weight:0", same),
    "sdpa_couples_query_and_key": (Case(lambda m, x: m.o(F.scaled_dot_product_attention(m.q(x), m.k(x), m.v(x))), {"q": nn.Linear(6, 4), "k": nn.Linear(6, 4), "v": nn.Linear(6, 3), "o": nn.Linear(3, 2)}, inputs=tokens), "q.weight:0", "k.weight:0", same),
    "sdpa_output_carries_value_channels": (Case(lambda m, x: m.o(F.scaled_dot_product_attention(m.q(x), m.k(x), m.v(x))), {"q": nn.Linear(6, 4), "k": nn.Linear(6, 4), "v": nn.Linear(6, 3), "o": nn.Linear(3, 2)}, inputs=tokens), "v.weight:0", "o.weight:1", same),
    # indexing with positions known from the model's own buffers permutes / repeats channels
    "index_select_with_buffer": (Case(lambda m, x: m.c(m.a(x).index_select(1, m.perm)), {"a": conv(3, 4), "c": conv(4, 2)}, buffers={"perm": torch.tensor(PERM)}), "a.weight:0", "c.weight:1", lambda i, j: PERM[j] == i),
    "advanced_index_with_buffer": (Case(lambda m, x: m.c(m.a(x)[:, m.perm]), {"a": conv(3, 4), "c": conv(4, 2)}, buffers={"perm": torch.tensor(PERM)}), "a.weight:0", "c.weight:1", lambda i, j: PERM[j] == i),
    "select_a_row": (Case(lambda m, x: m.fc(m.a(x)[:, :, 0].mean(-1)), {"a": conv(3, 4), "fc": nn.Linear(4, 2)}), "a.weight:0", "fc.weight:1", same),
    "slice_positions": (Case(lambda m, x: m.c(m.a(x)[:, :, :, 1:]), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    "narrow_positions": (Case(lambda m, x: m.c(m.a(x).narrow(2, 0, 1)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    "repeat_channels": (Case(lambda m, x: m.c(m.a(x).repeat(1, 2, 1, 1)), {"a": conv(3, 4), "c": conv(8, 2)}), "a.weight:0", "c.weight:1", lambda i, j: j % 4 == i),
    "pad_positions": (Case(lambda m, x: m.c(F.pad(m.a(x), (1, 1, 1, 1))), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", same),
    # channel shuffle: the shuffled order, and shuffled channels at one offset go together
    "channel_shuffle": (Case(lambda m, x: m.c(F.channel_shuffle(m.a(x), 2)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "c.weight:1", lambda i, j: j // 2 == i % 2),
}


@pytest.mark.parametrize("name", sorted(CORRESPONDENCE))
def test_channel_correspondence(name):
    case, first, second, relation = CORRESPONDENCE[name]
    _, prop = run(case)
    actual = coupling(prop, first, second)
    want = expected(prop, first, second, relation)
    assert actual.shape == want.shape
    mismatches = [(i, j) for i, j in zip(*np.nonzero(actual != want))]
    assert not mismatches, f"{first} ~ {second}: wrong pairs (i, j) {mismatches[:8]}"
    assert reasons(prop, first) == [None] * len(actual), reasons(prop, first)
    assert reasons(prop, second) == [None] * actual.shape[1], reasons(prop, second)


def test_branches_that_never_meet_stay_apart():
    case = CORRESPONDENCE["cat_first_input"][0]
    _, prop = run(case)
    assert not coupling(prop, "a.weight:0", "b.weight:0").any()
    assert not coupling(prop, "a.weight:0", "a.weight:0")[~np.eye(4, dtype=bool)].any()


def test_query_and_value_channels_are_independent():
    case = CORRESPONDENCE["sdpa_couples_query_and_key"][0]
    _, prop = run(case)
    assert not coupling(prop, "q.weight:0", "v.weight:0").any()
    assert not coupling(prop, "q.weight:0", "o.weight:1").any()


# ----------------------------------------------------------------------------------------------
# Operations after which the channels of a slot cannot be removed: (slot, part of the reason).
# ----------------------------------------------------------------------------------------------
FIXED = {
    "reduction_over_channels": (Case(lambda m, x: m.fc(m.a(x).mean(1).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(H * W, 2)}), "a.weight:0", "reduces over channels"),
    "sum_over_every_dim": (Case(lambda m, x: m.a(x).sum() * torch.ones(2, 1), {"a": conv(3, 4)}), "a.weight:0", "reduces over channels"),
    "softmax_over_channels": (Case(lambda m, x: m.c(torch.softmax(m.a(x), 1)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "mixes or reorders channels"),
    "flip_channels": (Case(lambda m, x: m.c(m.a(x).flip(1)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "mixes or reorders channels"),
    "pool_over_channels": (Case(lambda m, x: m.fc(F.avg_pool1d(m.a(x).flatten(2).transpose(1, 2), 2).flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(H * W * 2, 2)}), "a.weight:0", "pools over labelled positions"),
    "slice_of_channels": (Case(lambda m, x: m.c(m.a(x)[:, :2]), {"a": conv(3, 4), "c": conv(2, 2)}), "a.weight:0", "slices a fixed range of channels"),
    "pad_channels": (Case(lambda m, x: m.c(F.pad(m.a(x), (0, 0, 0, 0, 1, 0))), {"a": conv(3, 4), "c": conv(5, 2)}), "a.weight:0", "pads along channels"),
    "uneven_chunks": (Case(lambda m, x: m.c(m.a(x).chunk(3, 1)[0]), {"a": conv(3, 5), "c": conv(2, 2)}), "a.weight:0", "uneven chunks of channels"),
    "split_with_sizes": (Case(lambda m, x: m.c(m.a(x).split([1, 3], 1)[1]), {"a": conv(3, 4), "c": conv(3, 2)}), "a.weight:0", "split into parts of fixed sizes"),
    "equal_split_without_size_attribute": (Case(lambda m, x: m.c(m.a(x).split(2, 1)[0]), {"a": conv(3, 4), "c": conv(2, 2)}), "a.weight:0", "no attribute of the module holds that size"),
    "add_constant_of_channel_width": (Case(lambda m, x: m.c(m.a(x) + torch.ones(1, 4, 1, 1)), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "combined with a fixed tensor of the same width"),
    "residual_to_the_model_input": (Case(lambda m, x: m.c(m.a(x) + x), {"a": conv(3, 3), "c": conv(3, 2)}), "a.weight:0", "combined with a fixed tensor of the same width"),
    "unknown_operation": (Case(lambda m, x: m.c(torch.special.erfcx(m.a(x))), {"a": conv(3, 4), "c": conv(4, 2)}), "a.weight:0", "operation not supported by the dependency graph"),
    "parameter_on_the_left_of_matmul": (Case(lambda m, x: m.fc((m.w @ m.a(x).flatten(2)).transpose(1, 2)), {"a": conv(3, 4), "fc": nn.Linear(5, 2)}, params={"w": torch.randn(5, 4)}), "a.weight:0", "matrix product with a parameter on the left"),
    "index_with_computed_positions": (Case(lambda m, x: m.c(m.a(x).index_select(1, x[0, 0, 0].abs().long() % 4)), {"a": conv(3, 4), "c": conv(3, 2)}), "a.weight:0", "indexes channels with computed positions"),
    "model_output": (Case(lambda m, x: m.a(x), {"a": conv(3, 4)}), "a.weight:0", OUTPUT_REASON),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_channels_become_fixed(name):
    case, slot_name, reason = FIXED[name]
    _, prop = run(case)
    found = reasons(prop, slot_name)
    assert all(r is not None and reason in r for r in found), found


def test_fixed_reason_names_the_operation_and_module():
    class Opaque(nn.Module):
        def forward(self, x):
            return torch.special.erfcx(x)

    case = Case(lambda m, x: m.c(m.act(m.a(x))), {"a": conv(3, 4), "act": Opaque(), "c": conv(4, 2)})
    _, prop = run(case)
    assert set(reasons(prop, "a.weight:0")) == {
        "special_erfcx in `act` (Opaque): operation not supported by the dependency graph"}


def test_equal_split_records_the_size_attribute():
    case = CORRESPONDENCE["split_with_size_attribute"][0]
    _, prop = run(case)
    recorded = [(s.module, s.attribute, s.dim) for s in prop.size_attributes]
    assert ("", "split_size", 1) in recorded


def test_select_of_a_channel_is_recorded_as_a_whole_hyperplane():
    case = Case(lambda m, x: m.fc(m.a(x)[:, 1].flatten(1)), {"a": conv(3, 4), "fc": nn.Linear(H * W, 2)})
    _, prop = run(case)
    assert [(dim, where.split(" ")[0]) for _, dim, where in prop.whole_hyperplanes] == [(1, "select")]


def test_layer_norm_over_removable_channels_is_recorded():
    case = CORRESPONDENCE["layer_norm_over_features"][0]
    _, prop = run(case)
    assert [(n.module, n.dim, n.eps) for n in prop.norms] == [("ln", -1, 1e-5)]


def test_producers_are_the_output_slots():
    case = Case(lambda m, x: m.fc(m.bn(m.a(x)).mean((2, 3)) @ m.w), {"a": conv(3, 4), "bn": nn.BatchNorm2d(4), "fc": nn.Linear(5, 2)}, params={"w": torch.randn(4, 5)})
    _, prop = run(case)
    assert prop.producers == {Slot("a.weight", 0), Slot("w", 1), Slot("fc.weight", 0)}


# ----------------------------------------------------------------------------------------------
# The label layout of one operation's output: which dimension carries the producer's channels.
# ----------------------------------------------------------------------------------------------
def output_channels(propagator: Propagator, prop: Propagation, op: str, producer: str,
                    index: int = 0) -> tuple[set[int], list[int]]:
    """Varying dimensions of the labels of the ``index``-th ``op`` node, and for each position
    along the varying dimension, which channel of ``producer`` it holds (-1: none)."""
    nodes = [n for n in propagator.traced.graph.nodes if n.op == "call_function" and op_name(n) == op]
    labels = propagator.values[nodes[index]]
    uf = prop.union_find
    roots = {uf.find(int(a)): i for i, a in enumerate(atom_ids(prop, producer))}
    canon = np.vectorize(lambda a: uf.find(int(a)) if a >= 0 else -1)(labels) if labels.size else labels
    vary = varying_dims(np.asarray(canon))
    if len(vary) != 1:
        return vary, []
    (dim,) = vary
    line = np.moveaxis(canon, dim, 0).reshape(canon.shape[dim], -1)[:, 0]
    return vary, [roots.get(int(a), -1) for a in line]


LAYOUT = {
    "conv_output_channels_first": (lambda m, x: m.c(m.a(x)), "conv2d", 0, {1}, [0, 1, 2, 3]),
    "permute_moves_channels_last": (lambda m, x: m.c(m.a(x).permute(0, 2, 3, 1).permute(0, 3, 1, 2)), "permute", 0, {3}, [0, 1, 2, 3]),
    "permute_back": (lambda m, x: m.c(m.a(x).permute(0, 2, 3, 1).permute(0, 3, 1, 2)), "permute", 1, {1}, [0, 1, 2, 3]),
    "transpose_swaps_dims": (lambda m, x: m.c(m.a(x).transpose(1, 3).transpose(1, 3)), "transpose", 0, {3}, [0, 1, 2, 3]),
    "transpose_negative_dims": (lambda m, x: m.c(m.a(x).transpose(-3, -2).transpose(-3, -2)), "transpose", 0, {2}, [0, 1, 2, 3]),
    "movedim": (lambda m, x: m.c(torch.movedim(torch.movedim(m.a(x), 1, 2), 2, 1)), "movedim", 0, {2}, [0, 1, 2, 3]),
    "flatten_repeats_each_channel_h_times_w": (lambda m, x: m.fc(m.a(x).flatten(1)), "flatten", 0, {1}, [c for c in range(4) for _ in range(H * W)]),
    "cat_concatenates_in_order": (lambda m, x: m.c2(torch.cat([m.a(x), m.b(x)], 1)), "cat", 0, {1}, [0, 1, 2, 3, -1, -1]),
    "reversed_cat": (lambda m, x: m.c2(torch.cat([m.b(x), m.a(x)], 1)), "cat", 0, {1}, [-1, -1, 0, 1, 2, 3]),
    "index_select_permutes": (lambda m, x: m.c(m.a(x).index_select(1, m.perm)), "index_select", 0, {1}, PERM),
    "repeat_tiles": (lambda m, x: m.c2(m.a(x).repeat(1, 2, 1, 1)), "repeat", 0, {1}, [0, 1, 2, 3, 0, 1, 2, 3]),
}


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_output_layout(name):
    body, op, index, vary, channels = LAYOUT[name]
    modules = {"a": conv(3, 4), "b": conv(3, 2), "c": conv(4, 2), "c2": conv(8 if "repeat" in name else 6, 2),
               "fc": nn.Linear(4 * H * W, 2)}
    case = Case(body, modules, buffers={"perm": torch.tensor(PERM)})
    propagator, prop = run(case)
    assert output_channels(propagator, prop, op, "a.weight:0", index) == (vary, channels)


def test_chunk_parts_carry_their_half_of_the_channels():
    case = Case(lambda m, x: m.c(m.a(x).chunk(2, 1)[1]), {"a": conv(3, 4), "c": conv(2, 2)})
    propagator, prop = run(case)
    chunk = next(n for n in propagator.traced.graph.nodes if op_name(n) == "chunk")
    parts = propagator.values[chunk]
    assert len(parts) == 2 and [p.shape for p in parts] == [(1, 2, 1, 1)] * 2
    uf = prop.union_find
    first, second = ([uf.find(int(a)) for a in p.ravel()] for p in parts)
    channel = [uf.find(int(a)) for a in atom_ids(prop, "a.weight:0")]
    assert first == channel[:2] and second == channel[2:]
    assert first == second  # equal parts stay equal
