"""Channel compaction on a zoo of architectures: exact, smaller, exportable, replayable."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compressor.graph import (
    DependencyGraph,
    LayerHandler,
    MaskedNorms,
    apply_masks,
    compact,
    compact_selection,
    compaction_history,
    count_macs,
    load_compacted,
    register_handler,
    unregister_handler,
)
from compressor.utils.modules import count_parameters

from .zoo import ZOO, calibrate_norms, example_input


def random_selection(graph: DependencyGraph, ratio: float, seed: int = 0) -> dict[int, list[int]]:
    generator = torch.Generator().manual_seed(seed)
    selection = {}
    for group in graph.groups:
        count = int(len(group) * ratio)
        if count and count < len(group):
            selection[group.index] = sorted(torch.randperm(len(group), generator=generator)[:count]
                                            .tolist())
    return selection


def masked_output(model, graph, selection, inputs):
    masked = copy.deepcopy(model)
    apply_masks(masked, graph.masks(masked, selection))
    with MaskedNorms(masked, graph, selection), torch.no_grad():
        return masked(inputs)


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo_case(request):
    build, spec = ZOO[request.param]
    torch.manual_seed(0)
    model = calibrate_norms(build(), spec)
    inputs = example_input(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no group of a zoo model may be excluded
        graph = DependencyGraph(model, inputs)
    return request.param, model, inputs, graph


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_compaction_matches_masked_model(zoo_case, ratio):
    name, model, inputs, graph = zoo_case
    assert graph.groups, f"{name}: no prunable group found"
    selection = random_selection(graph, ratio)
    expected = masked_output(model, graph, selection, inputs)
    compacted = compact_selection(copy.deepcopy(model), graph, selection).model
    with torch.no_grad():
        actual = compacted(inputs)
        original = model(inputs)
    assert actual.shape == original.shape
    assert (actual - expected).abs().max() <= 1e-5
    assert (actual - original).abs().max() > 1e-4, "removal had no effect on the output"
    assert count_parameters(compacted) < count_parameters(model)
    assert count_macs(compacted, inputs) < count_macs(model, inputs)
    assert {n for n, _ in compacted.named_parameters()} == {n for n, _ in model.named_parameters()}
    assert [type(m) for m in compacted.modules()] == [type(m) for m in model.modules()]


def test_compacted_model_exports_to_onnx(zoo_case, tmp_path):
    name, model, inputs, graph = zoo_case
    compacted = compact_selection(copy.deepcopy(model), graph, random_selection(graph, 0.5)).model
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(compacted, (inputs,), str(path), dynamo=True, external_data=False,
                      verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    with torch.no_grad():
        expected = compacted(inputs).numpy()
    np.testing.assert_allclose(session.run(None, feed)[0], expected, atol=1e-4, rtol=1e-4)


def test_history_replays_on_a_fresh_model(zoo_case):
    name, model, inputs, graph = zoo_case
    compacted = compact_selection(copy.deepcopy(model), graph, random_selection(graph, 0.5)).model
    fresh = ZOO[name][0]().eval()
    load_compacted(fresh, {"state_dict": compacted.state_dict(),
                           "history": compaction_history(compacted)})
    with torch.no_grad():
        assert torch.equal(fresh(inputs), compacted(inputs))


def test_compact_infers_removed_channels_from_zeros():
    build, spec = ZOO["resnet8_residual"]
    model, inputs = build().eval(), example_input(spec)
    graph = DependencyGraph(model, inputs)
    selection = random_selection(graph, 0.5)
    apply_masks(model, graph.masks(model, selection))
    with torch.no_grad():
        expected = model(inputs)
    compact(model, inputs)
    with torch.no_grad():
        assert torch.allclose(model(inputs), expected, atol=1e-6)
    assert model.conv1.out_channels == 4 and model.layers[2][0].conv2.out_channels == 16


def test_reference_models_at_half_width_shrink_macs_and_onnx(tmp_path):
    from compressor.models import create_model

    for name in ("resnet20", "mobilenetv2"):
        model = create_model(name, num_classes=10, in_channels=1).eval()
        inputs = torch.randn(2, 1, 28, 28)
        graph = DependencyGraph(model, inputs)
        selection = {g.index: list(range(len(g) // 2)) for g in graph.groups if len(g) > 1}
        dense_macs = count_macs(model, inputs[:1])
        dense_path, small_path = tmp_path / f"{name}.onnx", tmp_path / f"{name}-small.onnx"
        torch.onnx.export(model, (inputs,), str(dense_path), dynamo=True, external_data=False)
        compact_selection(model, graph, selection)
        torch.onnx.export(model, (inputs,), str(small_path), dynamo=True, external_data=False)
        assert dense_macs / count_macs(model, inputs[:1]) >= 2.5, name
        assert dense_path.stat().st_size / small_path.stat().st_size >= 2.5, name


class UnknownActivation(nn.Module):
    """An activation built from an operation the dependency graph does not know."""

    def forward(self, x):
        return torch.special.erfcx(x.clamp(-3, 3))


class CustomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = UnknownActivation()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv2(self.act(self.conv1(x))).mean((2, 3)))


def test_unsupported_layer_is_excluded_with_a_warning():
    model, inputs = CustomNet().eval(), torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"`act` \(UnknownActivation\).*not supported"):
        graph = DependencyGraph(model, inputs)
    assert [g.modules for g in graph.groups] == [("conv2", "fc")]
    excluded = [e for e in graph.unexpected_exclusions if "conv1" in e.modules]
    assert excluded and excluded[0].channels == 8


def test_custom_layer_handler_makes_it_prunable():
    model, inputs = CustomNet().eval(), torch.randn(2, 3, 8, 8)
    register_handler(UnknownActivation, LayerHandler(channelwise=True))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            graph = DependencyGraph(model, inputs)
        assert len(graph.groups) == 2
        selection = {0: [1, 5], 1: [0]}
        expected = masked_output(model, graph, selection, inputs)
        compact_selection(model, graph, selection)
        with torch.no_grad():
            assert torch.allclose(model(inputs), expected, atol=1e-6)
        assert model.conv1.out_channels == 6
    finally:
        unregister_handler(UnknownActivation)


class WidthAware(nn.Module):
    """A custom layer that stores its width in an attribute used by forward."""

    def __init__(self, channels, attribute="channels"):
        super().__init__()
        self.attribute = attribute
        setattr(self, attribute, channels)
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.scale.view(1, getattr(self, self.attribute), 1, 1)


def test_width_named_attribute_follows_the_kept_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), WidthAware(8), nn.Conv2d(8, 4, 1)).eval()
    inputs = torch.randn(2, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = DependencyGraph(model, inputs)
    compact_selection(model, graph, {0: [2, 3]})
    assert model[1].channels == 6 and model(inputs).shape == (2, 4, 4, 4)


def test_other_attribute_of_the_width_needs_a_handler_update():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), WidthAware(8, "k"), nn.Conv2d(8, 4, 1)).eval()
    inputs = torch.randn(2, 3, 4, 4)
    with pytest.warns(UserWarning, match="stores its width in `k`"):
        graph = DependencyGraph(model, inputs)
    assert not graph.groups
    register_handler(WidthAware, lambda m: {"k": m.scale.shape[0]})
    try:
        graph = DependencyGraph(model, inputs)
        compact_selection(model, graph, {0: [2, 3]})
        assert model[1].k == 6
        assert model(inputs).shape == (2, 4, 4, 4)
    finally:
        unregister_handler(WidthAware)


@pytest.mark.slow
def test_reload_compacted_checkpoint_in_a_fresh_process(tmp_path):
    from compressor.models import create_model

    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    inputs = torch.randn(2, 1, 28, 28)
    graph = DependencyGraph(model, inputs)
    compact_selection(model, graph, random_selection(graph, 0.5))
    path = tmp_path / "compacted.pt"
    torch.save({"state_dict": model.state_dict(), "history": compaction_history(model)}, path)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(inputs), tmp_path / "expected.pt")
    code = f"""
import torch
from compressor import create_model
from compressor.graph import load_compacted
model = load_compacted(create_model("resnet20", num_classes=10, in_channels=1), {str(path)!r}).eval()
inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
with torch.no_grad():
    assert torch.equal(model(inputs), torch.load({str(tmp_path / 'expected.pt')!r}))
print(sum(p.numel() for p in model.parameters()))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == count_parameters(model)


def test_cannot_remove_every_channel_of_a_group():
    build, spec = ZOO["conv_chain"]
    model, inputs = build().eval(), example_input(spec)
    graph = DependencyGraph(model, inputs)
    with pytest.raises(ValueError, match="keep at least one"):
        compact_selection(model, graph, {0: list(range(len(graph.groups[0])))})


def test_compact_needs_inputs_or_graph():
    with pytest.raises(ValueError, match="example_inputs"):
        compact(nn.Linear(2, 2))
