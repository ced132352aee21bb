"""Finding the first non-finite value in plain modules, fx graphs and quantization observers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compressor.errors import NonFiniteError
from compressor.utils.finite import (
    NonFiniteSource,
    all_finite,
    describe_submodule,
    find_non_finite,
    non_finite_parameters,
    non_finite_ranges,
)

INF, NAN = math.inf, math.nan


class Times(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Net(nn.Module):
    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.block = nn.Sequential(nn.ReLU(), inner if inner is not None else nn.Identity())
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.block(self.bn(self.a(x))))


class LogInForward(Net):
    """Its own code (not a submodule) produces the NaN, between ``a`` and ``b``."""

    def forward(self, x):
        return self.b(torch.log(self.a(x) * 0 - 1))


@pytest.mark.parametrize("value, expected", [
    (torch.ones(3), True), (torch.tensor([1.0, INF]), False), (torch.tensor(NAN), False),
    ({"a": [torch.ones(2), (torch.zeros(1), 3)]}, True),
    ({"a": [torch.ones(2), (torch.tensor([NAN]), 3)]}, False),
    (torch.tensor([1, 2]), True), ("text", True), (None, True), ([], True),
])
def test_all_finite(value, expected):
    assert all_finite(value) is expected


def test_innermost_module_with_a_non_finite_output_is_reported():
    model = Net(Times(INF)).train()
    source = find_non_finite(model, torch.randn(3, 4))
    assert source == NonFiniteSource("module", "block.1", "Times", "block.1")
    assert source.describe("student") == ("First module of the student with a non-finite "
                                          "output: 'block.1' (Times).")


def test_state_modes_hooks_and_random_state_are_restored():
    model = Net(nn.Sequential(nn.Dropout(0.5), Times(INF))).train()
    model.block.eval()
    inputs = torch.randn(3, 4)
    statistics = {k: v.clone() for k, v in model.state_dict().items()}
    random_state = torch.get_rng_state()
    find_non_finite(model, inputs)
    assert all(torch.equal(v, statistics[k]) for k, v in model.state_dict().items())
    assert model.training and not model.block.training and not model.block[1][0].training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(torch.get_rng_state(), random_state)


def test_code_between_submodules_is_blamed_on_the_module_running_it():
    source = find_non_finite(LogInForward(), torch.randn(3, 4))
    assert (source.kind, source.name, source.module) == ("code", "", "")
    assert "the model's own forward (LogInForward), outside its submodules" in source.describe()


def test_non_finite_inputs_and_weights_are_said_so():
    model = Net()
    assert find_non_finite(model, torch.full((2, 4), INF)).kind == "inputs"
    with torch.no_grad():
        model.a.weight[0, 0] = NAN
    source = find_non_finite(model, (torch.randn(2, 4),))
    assert (source.name, source.detail) == ("a", "its own 'weight' already non-finite")


def test_finite_run_returns_none_and_keyword_inputs_work():
    class Keywords(nn.Module):
        def forward(self, x, *, scale):
            return x * scale

    assert find_non_finite(Net(), torch.randn(2, 4)) is None
    assert find_non_finite(Keywords(), (torch.ones(2),), {"scale": torch.tensor(INF)}).kind == "inputs"
    assert find_non_finite(Keywords(), (torch.ones(2),), {"scale": torch.tensor(2.0)}) is None


def test_failure_while_re_running_is_reported_with_the_module():
    class Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("min should be less than max")

    source = find_non_finite(Net(Refuses()), torch.randn(2, 4))
    assert (source.kind, source.name) == ("error", "block.1")
    assert "failed in 'block.1' (Refuses); AssertionError: min should be less" in \
        source.describe()


def test_graph_modules_are_searched_node_by_node_with_their_module_path():
    model = torch.export.export(Net(Times(INF)).eval(), (torch.randn(2, 4),)).module()
    source = find_non_finite(model, torch.randn(2, 4))  # exported with a static batch of 2
    assert source.kind == "node" and source.module == "block.1"
    assert "graph node" in source.describe() and "of module 'block.1'" in source.describe()
    traced = torch.fx.symbolic_trace(LogInForward())
    assert find_non_finite(traced, torch.randn(3, 4)).name == "log"
    failing = find_non_finite(model, torch.randn(3, 4))  # the graph's own guard refuses it
    assert failing.kind == "error" and "Guard failed" in failing.detail


def test_a_graph_module_inside_a_plain_module_is_searched_inside():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.export.export(Net(Times(INF)).eval(),
                                             (torch.randn(2, 4),)).module()

        def forward(self, x):
            return self.inner(x)

    source = find_non_finite(Outer(), torch.randn(2, 4))
    assert source.kind == "node" and source.module == "inner.block.1"


class Observer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("min_val", torch.tensor(INF))
        self.register_buffer("max_val", torch.tensor(-INF))


class FakeQuantize(nn.Module):
    def __init__(self):
        super().__init__()
        self.activation_post_process = Observer()
        self.register_buffer("scale", torch.tensor([1.0]))


def test_observer_ranges():
    model = nn.ModuleDict({"q0": FakeQuantize(), "q1": FakeQuantize(), "plain": Observer()})
    assert non_finite_ranges(model) == []  # nothing observed yet is fine
    model["q0"].activation_post_process.min_val.fill_(-1.0)
    model["q0"].activation_post_process.max_val.fill_(2.0)
    assert non_finite_ranges(model) == []
    model["q1"].activation_post_process.max_val.fill_(INF)
    model["plain"].min_val.fill_(NAN)
    assert non_finite_ranges(model) == ["q1", "plain"]
    model["q0"].scale.fill_(NAN)
    assert non_finite_ranges(model) == ["q1", "plain", "q0"]
    assert describe_submodule(model, "q1") == "'q1'"


def test_non_finite_parameters():
    model = Net()
    assert non_finite_parameters(model) == []
    with torch.no_grad():
        model.b.bias[0] = -INF
    assert non_finite_parameters(model) == ["b.bias"]


def test_error_message_and_location():
    error = NonFiniteError("the training loss", where="First module: 'a'.", hint="lower it.",
                           module="a")
    assert str(error) == ("The training loss became non-finite (NaN or Inf). First module: 'a'. "
                          "Hint: lower it.")
    assert error.locate(7, ["pruning", "QAT"]) is error
    assert str(error).startswith("The training loss became non-finite (NaN or Inf) at global "
                                 "step 7, during pruning + QAT. First")
    assert "before any compression phase started" in str(error.locate(0, []))
    assert isinstance(error, FloatingPointError)
