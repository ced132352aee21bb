import pytest
import torch
from torch import nn

from compressor.pruning import MaskSet


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=0.01),
])
def test_masked_weights_stay_zero_under_momentum_and_adam(make_optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = make_optimizer(model.parameters())
    # a few unmasked steps first so momentum / Adam moments are non-zero everywhere
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 8)).square().sum().backward()
        optimizer.step()
    keep = torch.rand(16, 8) > 0.5
    masks = MaskSet({"0.weight": keep})
    masks.attach(model, [optimizer])
    assert (model[0].weight[~keep] == 0).all()
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(5, 8)).square().sum().backward()
        assert (model[0].weight.grad[~keep] == 0).all()  # zero gradient for masked entries
        optimizer.step()
        assert (model[0].weight[~keep] == 0).all()
        for value in optimizer.state[model[0].weight].values():
            if isinstance(value, torch.Tensor) and value.shape == keep.shape:
                assert (value[~keep] == 0).all()
    assert (model[0].weight[keep] != 0).all()
    masks.detach()


def test_detach_stops_enforcement():
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    masks = MaskSet({"weight": torch.zeros(4, 4, dtype=torch.bool)})
    masks.attach(model, [optimizer])
    masks.detach()
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    assert (model.weight != 0).all()


def test_state_dict_round_trip():
    masks = MaskSet({"w": torch.tensor([True, False])})
    restored = MaskSet()
    restored.load_state_dict(masks.state_dict())
    assert torch.equal(restored.masks["w"], masks.masks["w"]) and restored.sparsity() == 0.5
