"""The layer-handler registry: registering, resolving by class hierarchy and by qualified name,
the built-in attribute updates, and handlers that the dependency graph uses (channel-wise
black boxes, custom propagation) or that fail without crashing it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from compressor.errors import InvalidTypeError
from compressor.graph import (
    DependencyGraph,
    LayerHandler,
    compact_selection,
    register_handler,
    unregister_handler,
)
from compressor.graph import handlers as registry
from compressor.graph.atoms import Slot
from compressor.graph.handlers import attribute_updates, handler_for


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch):
    """Every test registers into a copy of the registry, so nothing leaks between tests."""
    monkeypatch.setattr(registry, "_HANDLERS", dict(registry._HANDLERS))


class Base(nn.Module):
    def forward(self, x):
        return x


class Child(Base):
    pass


# ---------------------------------------------------------------------------- registration


@pytest.mark.parametrize("module_type", [Base(), int, "Base", None])
def test_only_module_classes_can_be_registered(module_type):
    with pytest.raises(InvalidTypeError, match="nn.Module subclass"):
        register_handler(module_type, LayerHandler())


@pytest.mark.parametrize("handler", [None, 3, {"update": None}])
def test_handler_must_be_a_layer_handler_or_a_function(handler):
    with pytest.raises(InvalidTypeError, match="LayerHandler or a function"):
        register_handler(Base, handler)
    assert handler_for(Base()) is None


def test_a_function_is_registered_as_the_update():
    def update(module):
        return {"width": 3}

    register_handler(Base, update)
    handler = handler_for(Base())
    assert isinstance(handler, LayerHandler) and handler.update is update
    assert not handler.channelwise and handler.propagate is None
    assert attribute_updates(Base()) == {"width": 3}


def test_subclasses_use_the_most_specific_handler():
    base, child = LayerHandler(update=lambda m: {"from": "base"}), LayerHandler(channelwise=True)
    assert handler_for(Child()) is None
    register_handler(Base, base)
    assert handler_for(Child()) is base
    register_handler(Child, child)
    assert handler_for(Child()) is child and handler_for(Base()) is base
    unregister_handler(Child)
    assert handler_for(Child()) is base
    unregister_handler(Child)  # removing twice is harmless
    unregister_handler(Base)
    assert handler_for(Child()) is None


def test_registering_again_replaces_the_handler():
    register_handler(Base, lambda m: {"n": 1})
    register_handler(Base, lambda m: {"n": 2})
    assert attribute_updates(Base()) == {"n": 2}


def test_unknown_modules_have_no_handler_and_no_updates():
    assert handler_for(Base()) is None and attribute_updates(Base()) == {}
    assert handler_for(nn.ReLU()) is None


def test_third_party_layer_is_found_by_qualified_name_without_importing_it():
    conv1d = type("Conv1D", (nn.Module,), {"__module__": "transformers.pytorch_utils"})
    layer = conv1d()
    layer.weight = nn.Parameter(torch.zeros(6, 10))  # (in, out)
    assert attribute_updates(layer) == {"nx": 6, "nf": 10}
    other = type("Conv1D", (nn.Module,), {"__module__": "somewhere.else"})
    assert handler_for(other()) is None


# ------------------------------------------------------------------- built-in attribute updates


def sliced(module: nn.Module, **shapes: tuple[slice, ...]) -> nn.Module:
    for name, index in shapes.items():
        tensor = getattr(module, name)
        value = tensor[index].clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(value))
        else:
            module.register_buffer(name, value)
    return module


BUILTIN = {
    "conv": (lambda: sliced(nn.Conv2d(3, 8, 3), weight=(slice(0, 5), slice(0, 2))), {"out_channels": 5, "in_channels": 2}),
    "conv1d": (lambda: sliced(nn.Conv1d(4, 6, 1), weight=(slice(0, 2),)), {"out_channels": 2, "in_channels": 4}),
    "depthwise_conv": (lambda: sliced(nn.Conv2d(8, 8, 3, groups=8), weight=(slice(0, 6),)), {"out_channels": 6, "in_channels": 6, "groups": 6}),
    "depthwise_conv_multiplier_2": (lambda: sliced(nn.Conv2d(4, 8, 3, groups=4), weight=(slice(0, 6),)), {"out_channels": 6, "in_channels": 3, "groups": 3}),
    "grouped_conv": (lambda: sliced(nn.Conv2d(8, 6, 1, groups=2), weight=(slice(0, 4), slice(0, 3))), {"out_channels": 4, "in_channels": 6}),
    "linear": (lambda: sliced(nn.Linear(8, 6), weight=(slice(0, 4), slice(0, 5))), {"out_features": 4, "in_features": 5}),
    "batch_norm": (lambda: sliced(nn.BatchNorm2d(8), weight=(slice(0, 5),)), {"num_features": 5}),
    "batch_norm_without_affine": (lambda: sliced(nn.BatchNorm1d(8, affine=False), running_mean=(slice(0, 3),)), {"num_features": 3}),
    "instance_norm": (lambda: sliced(nn.InstanceNorm2d(8, affine=True), weight=(slice(0, 2),)), {"num_features": 2}),
    "group_norm": (lambda: sliced(nn.GroupNorm(4, 8), weight=(slice(0, 6),)), {"num_channels": 6, "num_groups": 3}),
    "layer_norm": (lambda: sliced(nn.LayerNorm(8), weight=(slice(0, 5),)), {"normalized_shape": (5,)}),
    "rms_norm": (lambda: sliced(nn.RMSNorm(8), weight=(slice(0, 7),)), {"normalized_shape": (7,)}),
    "embedding": (lambda: sliced(nn.Embedding(10, 8), weight=(slice(None), slice(0, 3))), {"embedding_dim": 3}),
    "prelu": (lambda: sliced(nn.PReLU(8), weight=(slice(0, 4),)), {"num_parameters": 4}),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_layers_report_the_attributes_of_their_sliced_tensors(name):
    build, expected = BUILTIN[name]
    assert attribute_updates(build()) == expected


def test_builtin_handlers_cover_subclasses_of_torch_layers():
    class MyConv(nn.Conv2d):
        pass

    assert attribute_updates(sliced(MyConv(3, 8, 1), weight=(slice(0, 2),))) == {
        "out_channels": 2, "in_channels": 3}


def test_layer_norm_without_weights_needs_no_update():
    assert attribute_updates(nn.LayerNorm(8, elementwise_affine=False)) == {}
    assert attribute_updates(nn.GroupNorm(2, 8, affine=False)) == {}


# ------------------------------------------------------------------ handlers used by the graph


class Opaque(nn.Module):
    """A per-channel layer built from an operation the dependency graph does not know."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x):
        return torch.special.erfcx((x * self.scale).clamp(-3, 3))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = Opaque(8)

    def forward(self, x):
        return self.act(x)


class Tokens(nn.Module):
    """``Linear(6, 8) -> Opaque on the last dim -> Linear(8, 2)``, with a prunable ``c -> d`` pair."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.block = Block()
        self.b = nn.Linear(8, 4)
        self.c = nn.Linear(4, 5)
        self.d = nn.Linear(5, 2)

    def forward(self, x):
        return self.d(torch.relu(self.c(self.b(self.block(self.a(x))))))


TOKENS = torch.randn(2, 5, 6)


def quiet_graph(model: nn.Module, inputs: torch.Tensor) -> DependencyGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return DependencyGraph(model.eval(), inputs)


def test_unknown_leaf_module_is_excluded_with_a_reason_not_a_crash():
    model = Tokens().eval()
    with pytest.warns(UserWarning, match=r"`block\.act` \(Opaque\)"):
        graph = DependencyGraph(model, TOKENS)
    excluded = [e for e in graph.unexpected_exclusions if "a" in e.modules]
    assert len(excluded) == 1 and excluded[0].channels == 8
    assert "operation not supported" in excluded[0].reason and "block.act" in excluded[0].reason
    assert "`a`" in graph.exclusion_summary()
    assert [g.producers for g in graph.groups] == [("b",), ("c",)]  # the rest stays prunable
    with torch.no_grad():
        model(TOKENS)  # the model itself is untouched


def test_channelwise_handler_on_the_last_dim_makes_the_layer_prunable():
    register_handler(Opaque, LayerHandler(channelwise=True, channel_dim=-1))
    model = Tokens().eval()
    graph = quiet_graph(model, TOKENS)  # the graph validates every group by trial removal
    group = next(g for g in graph.groups if "a" in g.producers)
    assert set(group.modules) == {"a", "block.act", "b"} and len(group) == 8
    for index, channel in enumerate(group.channels):
        assert channel.slices[Slot("block.act.scale", 0)] == (index,)
        assert channel.slices[Slot("b.weight", 1)] == (index,)
    compact_selection(model, graph, {group.index: [1, 4]})
    assert model.block.act.scale.shape == (6,) and model.a.out_features == 6
    assert model(TOKENS).shape == (2, 5, 2)


class Reverse(nn.Module):
    """Reverses the channel order with an operation the graph cannot see through."""

    def forward(self, x):
        return torch.special.erfcx(x.clamp(-3, 3)).flip(1)


class ReverseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.rev = Reverse()
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(self.rev(self.a(x)))


IMAGE = torch.randn(2, 3, 4, 4)


def test_custom_propagation_is_called_and_its_labels_are_used():
    calls = []

    def propagate(propagator, module, path, inputs, outputs):
        calls.append((type(module).__name__, path, len(inputs), len(outputs)))
        labels = propagator.labels(inputs[0])
        return {node: propagator.output(labels[:, ::-1]) for node in outputs}

    register_handler(Reverse, LayerHandler(propagate=propagate))
    graph = quiet_graph(ReverseNet(), IMAGE)
    assert calls == [("Reverse", "rev", 1, 1)]
    (group,) = graph.groups
    assert [(c.slices[Slot("a.weight", 0)], c.slices[Slot("c.weight", 1)]) for c in group.channels] == [
        ((i,), (3 - i,)) for i in range(4)]


def test_failing_custom_propagation_excludes_the_channels_with_the_error():
    def propagate(propagator, module, path, inputs, outputs):
        raise RuntimeError("boom")

    register_handler(Reverse, LayerHandler(propagate=propagate))
    with pytest.warns(UserWarning, match="could not analyse `rev`"):
        graph = DependencyGraph(ReverseNet().eval(), IMAGE)
    assert not graph.groups
    (exclusion,) = [e for e in graph.unexpected_exclusions if "a" in e.modules]
    assert "could not analyse `rev` (RuntimeError: boom)" in exclusion.reason and exclusion.channels == 4


def test_without_a_handler_the_reversing_layer_blocks_pruning():
    with pytest.warns(UserWarning, match=r"`rev` \(Reverse\)"):
        graph = DependencyGraph(ReverseNet().eval(), IMAGE)
    assert not graph.groups
