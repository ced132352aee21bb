import pytest
import torch

from compressor.errors import ConfigError, UnknownNameError
from compressor.pruning import make_criterion


def test_magnitudes():
    weight = torch.tensor([[-2.0, 1.0], [0.5, 0.0]])
    assert torch.equal(make_criterion("l1").scores("w", weight), weight.abs())
    assert torch.equal(make_criterion("l2").scores("w", weight), weight.square())


def test_taylor_is_mean_abs_weight_times_gradient():
    torch.manual_seed(0)
    layer, criterion, stats = torch.nn.Linear(4, 3), make_criterion("taylor"), []
    for _ in range(3):
        layer.zero_grad()
        layer(torch.randn(5, 4)).square().sum().backward()
        criterion.accumulate({"weight": layer.weight})
        stats.append((layer.weight * layer.weight.grad).abs().detach())
    expected = torch.stack(stats).mean(0)
    assert torch.allclose(criterion.scores("weight", layer.weight), expected)


def test_obd_is_half_fisher_times_weight_squared():
    torch.manual_seed(0)
    layer, criterion, squares = torch.nn.Linear(4, 3), make_criterion("obd"), []
    for _ in range(2):
        layer.zero_grad()
        layer(torch.randn(5, 4)).sum().backward()
        criterion.accumulate({"weight": layer.weight})
        squares.append(layer.weight.grad.square())
    fisher = torch.stack(squares).mean(0)
    assert torch.allclose(criterion.scores("weight", layer.weight),
                          0.5 * fisher * layer.weight.detach().square())


def test_gradient_criteria_need_accumulation():
    with pytest.raises(ConfigError, match="Call `accumulate\\(\\)` after backward"):
        make_criterion("taylor").scores("w", torch.ones(2))


def test_state_round_trip():
    layer, criterion = torch.nn.Linear(2, 2), make_criterion("taylor")
    layer(torch.ones(1, 2)).sum().backward()
    criterion.accumulate({"w": layer.weight})
    restored = make_criterion("taylor")
    restored.load_state_dict(criterion.state_dict())
    assert torch.equal(restored.scores("w", layer.weight), criterion.scores("w", layer.weight))


def test_random_is_seeded():
    weight = torch.zeros(10)
    first = make_criterion("random", seed=1).scores("w", weight)
    assert torch.equal(first, make_criterion("random", seed=1).scores("w", weight))
    assert not torch.equal(first, make_criterion("random", seed=2).scores("w", weight))


def test_bn_scale_uses_norm_weights_only():
    criterion = make_criterion("bn_scale", norm_weights={"bn.weight"})
    assert torch.equal(criterion.scores("bn.weight", torch.tensor([-3.0, 1.0])),
                       torch.tensor([3.0, 1.0]))
    assert not criterion.scores("conv.weight", torch.ones(3)).any()


def test_unknown_criterion():
    with pytest.raises(UnknownNameError, match="Valid values: bn_scale, l1, l2, obd, random, taylor"):
        make_criterion("magnitude")
