import copy
import itertools

import pytest
import torch
from torch import nn

from compressor.errors import ConfigError, UnknownNameError
from compressor.models import create_model
from compressor.pruning import Pruner, PruningConfig, sparsity_report

INPUTS = torch.randn(2, 1, 8, 8)


def resnet():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)


def vit():
    torch.manual_seed(0)
    return create_model("vit_tiny", num_classes=10, in_channels=1, image_size=8, dim=32, depth=2)


def with_gradients(pruner, model, steps=2):
    for _ in range(steps):
        model.zero_grad()
        model(torch.randn(4, 1, 8, 8)).square().mean().backward()
        pruner.accumulate()


CRITERIA = ["l1", "l2", "taylor", "obd", "random"]


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_unstructured_reaches_target_exactly(criterion, allocation):
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="unstructured", sparsity=0.9, criterion=criterion, allocation=allocation))
    with_gradients(pruner, model)
    status = pruner.update()
    report = sparsity_report(model)
    pruned = [layer for layer in report.layers if layer.name in pruner.units]
    zeros, numel = sum(layer.zeros for layer in pruned), sum(layer.numel for layer in pruned)
    assert zeros / numel == pytest.approx(0.9, abs=1e-3)
    assert status.sparsity == pytest.approx(0.9, abs=1e-3)
    if allocation == "uniform":
        assert all(layer.sparsity == pytest.approx(0.9, abs=0.01) for layer in pruned)


def test_first_and_last_layers_are_protected_by_default():
    model = resnet()
    Pruner(model, PruningConfig(granularity="unstructured", sparsity=0.5)).update()
    assert (model.conv1.weight != 0).all() and (model.fc.weight != 0).all()
    model = resnet()
    Pruner(model, PruningConfig(granularity="unstructured", sparsity=0.5, protect_first_last=False)).update()
    assert (model.conv1.weight == 0).any() and (model.fc.weight == 0).any()


@pytest.mark.parametrize("criterion", ["l1", "taylor", "random"])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_n_m_pattern_in_every_group(criterion, n, m):
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(32, 16))
    pruner = Pruner(model, PruningConfig(granularity="n:m", criterion=criterion, n=n, m=m,
                                         protect_first_last=False))
    with_gradients(pruner, model)
    pruner.update()
    for unit in pruner.units:
        weight = dict(model.named_parameters())[unit]
        groups = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
        assert (groups == n).all(), unit  # groups of m consecutive inputs keep exactly n


def test_n_m_on_convolutions_groups_along_input_channels():
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="n:m"))
    pruner.update()
    weight = model.layers[1][0].conv2.weight  # (16, 16, 3, 3)
    kept = (weight != 0).movedim(1, -1).reshape(-1, 4).sum(-1)
    assert (kept == 2).all()


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "obd", "bn_scale", "random"])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_channel_sparsity_within_one_percent(criterion, allocation):
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5, criterion=criterion, allocation=allocation), INPUTS)
    with_gradients(pruner, model)
    status = pruner.update()
    assert status.sparsity == pytest.approx(0.5, abs=0.01)
    expected = copy.deepcopy(model).eval()(INPUTS)
    pruner.compact()
    assert torch.allclose(model.eval()(INPUTS), expected, atol=1e-5)
    if allocation == "uniform":
        assert model.conv1.out_channels == 4


def test_head_pruning_removes_whole_heads():
    model = vit()
    pruner = Pruner(model, PruningConfig(granularity="head", sparsity=0.5, criterion="l1"), torch.randn(2, 1, 8, 8))
    assert len(pruner.units) == 2  # one head group per layer
    pruner.update()
    expected = copy.deepcopy(model).eval()(INPUTS)
    pruner.compact()
    assert [layer.attn.num_heads for layer in model.layers] == [2, 2]
    assert torch.allclose(model.eval()(INPUTS), expected, atol=1e-5)


@pytest.mark.parametrize("criterion", ["l1", "taylor", "random"])
def test_block_pruning_replaces_blocks_by_identity(criterion):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1, width_mult=0.5)
    pruner = Pruner(model, PruningConfig(granularity="block", sparsity=0.5, criterion=criterion), INPUTS)
    with_gradients(pruner, model)
    status = pruner.update()
    assert len(pruner.unit_set.blocks) == 7  # 9 blocks, 2 with projection shortcuts
    assert status.sparsity == pytest.approx(4 / 7)
    expected = copy.deepcopy(model).eval()(INPUTS)
    pruner.compact()
    identities = [m for m in model.modules() if isinstance(m, nn.Identity)]
    assert len([b for b in identities if b is not None]) >= 4
    assert torch.allclose(model.eval()(INPUTS), expected, atol=1e-5)


def test_masks_only_grow():
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="unstructured", sparsity=0.8, criterion="random"))
    pruner.update(0.3)
    first = {u: r.clone() for u, r in pruner.removed.items()}
    pruner.update(0.8)
    assert all((pruner.removed[u] | ~first[u]).all() for u in first)


def test_overrides_and_ignore():
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="unstructured", sparsity=0.5, overrides={"layers.2.*": 0.8},
                                         ignore=["layers.0.0.conv1"]))
    pruner.update()
    assert (model.layers[0][0].conv1.weight != 0).all()
    layer = model.layers[2][0].conv1.weight
    assert float((layer == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    assert float((model.layers[1][0].conv1.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_channel_ignore_skips_groups_touching_the_module():
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5, ignore=["layers.1.0.conv1"]), INPUTS)
    pruner.update()
    pruner.compact()
    assert model.layers[1][0].conv1.out_channels == 16


def test_state_round_trip_restores_masks():
    model = resnet()
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5, criterion="random"), INPUTS)
    pruner.update()
    fresh = resnet()
    restored = Pruner(fresh, PruningConfig(granularity="channel", sparsity=0.5, criterion="random"), INPUTS)
    restored.load_state_dict(pruner.state_dict())
    assert restored.selection() == pruner.selection()
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter == 0, dict(fresh.named_parameters())[name] == 0), name


@pytest.mark.parametrize("kwargs, error, match", [
    ({"granularity": "unstructured", "sparsity": 1.0}, ConfigError, r"`sparsity`: .*less than 1.*\[0, 1\)"),
    ({"granularity": "unstructured", "sparsity": -0.2}, ConfigError, "sparsity"),
    ({"granularity": "unstructured"}, ConfigError, "`sparsity` is required"),
    ({"granularity": "n:m", "n": 4, "m": 4}, ConfigError, "n < m"),
    ({"granularity": "n:m", "n": 2, "m": 4, "sparsity": 0.3}, ConfigError, "fixed by n:m"),
    ({"granularity": "filters", "sparsity": 0.5}, UnknownNameError, "block, channel, head, n:m, unstructured"),
    ({"granularity": "channel", "sparsity": 0.5, "criterion": "fisher"}, UnknownNameError, "bn_scale, l1"),
    ({"granularity": "unstructured", "sparsity": 0.5, "criterion": "bn_scale"}, ConfigError, "bn_scale"),
    ({"granularity": "unstructured", "sparsity": 0.5, "allocation": "layerwise"}, UnknownNameError, "global, uniform"),
    ({"granularity": "unstructured", "sparsity": 0.5, "overrides": {"x": 1.5}}, ConfigError, "overrides"),
])
def test_bad_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruningConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"ignore": ["layers.9.*"]}, "`ignore` entry 'layers.9.\\*' matches no layer"),
    ({"overrides": {"layer.2.*": 0.7}}, "`overrides` entry 'layer.2.\\*' matches no layer.*Did you mean"),
])
def test_patterns_that_match_nothing(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Pruner(resnet(), PruningConfig(granularity="unstructured", sparsity=0.5, **kwargs))


def test_nothing_to_prune():
    with pytest.raises(ConfigError, match="Nothing to prune in Sequential"):
        Pruner(nn.Sequential(nn.ReLU()), PruningConfig(granularity="unstructured", sparsity=0.5))
    with pytest.raises(ConfigError, match="no multi-head attention"):
        Pruner(resnet(), PruningConfig(granularity="head", sparsity=0.5), INPUTS)
    with pytest.raises(ConfigError, match="first and last layers are protected"):
        Pruner(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), PruningConfig(granularity="unstructured", sparsity=0.5))


def test_structured_needs_example_inputs():
    with pytest.raises(ConfigError, match="pass `example_inputs`"):
        Pruner(resnet(), PruningConfig(granularity="channel", sparsity=0.5))


def test_all_granularity_criterion_pairs_construct():
    for granularity, criterion in itertools.product(["channel", "block"], ["l1", "obd"]):
        model = resnet()
        Pruner(model, PruningConfig(granularity=granularity, sparsity=0.3, criterion=criterion), INPUTS)


REFERENCE = [
    ("resnet20", {"width_mult": 0.5}),
    ("resnet50", {"width_mult": 0.125}),
    ("mobilenetv2", {"width_mult": 0.5, "squeeze_excitation": True, "last_channels": 64}),
    ("vit_tiny", {"dim": 32, "depth": 2, "image_size": 8}),
    ("mlp", {"hidden": (64, 32), "image_size": 8}),
]


@pytest.mark.parametrize("name, options", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_gradual_channel_schedule_reaches_half_on_reference_models(name, options):
    from compressor.pruning import make_schedule

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, **options)
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5, criterion="l1"), INPUTS)
    schedule = make_schedule("cubic", 0.5, start=0, end=4)
    for step in schedule.events():
        status = pruner.update(schedule(step))
    assert status.sparsity == pytest.approx(0.5, abs=0.01)
    assert status.target == 0.5


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "obd", "random"])
def test_head_pruning_with_every_criterion(criterion):
    model = vit()
    pruner = Pruner(model, PruningConfig(granularity="head", sparsity=0.5, criterion=criterion), INPUTS)
    with_gradients(pruner, model)
    assert pruner.update().sparsity == 0.5
