import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from compressor.distillation import attach_parameters, find_group

SCHEDULERS = {
    "lambda": lambda o: lr_scheduler.LambdaLR(o, lambda step: 0.5 ** step),
    "sequential": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, 0.1, total_iters=2), lr_scheduler.StepLR(o, 2)], [2]),
    "onecycle": lambda o: lr_scheduler.OneCycleLR(o, 1.0, total_steps=20),
    "cosine": lambda o: lr_scheduler.CosineAnnealingLR(o, 10),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_added_group_follows_the_first_groups_schedule(name):
    model, extra = nn.Linear(3, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    scheduler = SCHEDULERS[name](optimizer)
    assert attach_parameters(optimizer, list(extra.parameters()), [scheduler])
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    first, added = optimizer.param_groups
    assert added is find_group(optimizer)
    assert added["lr"] == pytest.approx(first["lr"])
    scheduler.load_state_dict(scheduler.state_dict())


def test_attach_is_idempotent_and_replaces_changed_parameters():
    model, extra, rebuilt = nn.Linear(3, 2), nn.Linear(2, 2), nn.Linear(1, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert not attach_parameters(optimizer, [])  # nothing to add: no empty group
    assert attach_parameters(optimizer, list(extra.parameters()))
    assert not attach_parameters(optimizer, list(extra.parameters()))
    extra(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    assert extra.weight in optimizer.state
    assert attach_parameters(optimizer, list(rebuilt.parameters()))
    assert len(optimizer.param_groups) == 2
    assert find_group(optimizer)["params"] == list(rebuilt.parameters())
    assert extra.weight not in optimizer.state


def test_optimizer_state_with_added_group_round_trips():
    model, extra = nn.Linear(3, 2), nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    attach_parameters(optimizer, list(extra.parameters()))
    state = optimizer.state_dict()
    fresh = torch.optim.Adam(model.parameters())
    attach_parameters(fresh, list(extra.parameters()))
    fresh.load_state_dict(state)
    assert find_group(fresh) is not None  # the tag survives, so the group is found again
