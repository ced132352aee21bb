"""The teacher's speed-ups never change whether the user's model runs or what it computes."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from compressor.distillation import DistillationConfig, Distiller
from compressor.utils.modes import record_modes, restore_modes, temporary_mode
from tests.user_models import CachedBiasAttention, CachedBiasTransformer, ViewFlattenNet


def kd_step(distiller: Distiller, student: nn.Module, inputs, labels) -> torch.Tensor:
    with distiller.capture():
        logits = student(inputs)
    return distiller(F.cross_entropy(logits, labels))


def test_view_after_convolutions_keeps_the_plain_layout_and_its_outputs():
    teacher, student = ViewFlattenNet(), ViewFlattenNet()
    expected_teacher = copy.deepcopy(teacher).eval()
    distiller = Distiller(teacher, student, DistillationConfig(alpha=1.0, temperature=2.0))
    inputs, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    loss = kd_step(distiller, student, inputs, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.is_contiguous() for p in teacher.parameters())
    with torch.no_grad():
        reference = F.kl_div(F.log_softmax(student(inputs) / 2.0, -1),
                             F.softmax(expected_teacher(inputs) / 2.0, -1),
                             reduction="batchmean") * 4.0
    assert torch.allclose(loss, reference, atol=1e-5)
    kd_step(distiller, student, inputs, labels)  # later steps take the same (plain) path


def test_flattening_model_switches_to_channels_last_with_the_same_outputs():
    class FlattenNet(ViewFlattenNet):
        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.max_pool2d(F.relu(self.conv3(x)), 2)
            return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    teacher, student = FlattenNet(), FlattenNet()
    reference = copy.deepcopy(teacher).eval()
    distiller = Distiller(teacher, student, DistillationConfig(alpha=1.0))
    inputs, labels = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loss = kd_step(distiller, student, inputs, labels)
    assert teacher.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = F.kl_div(F.log_softmax(student(inputs) / 4.0, -1),
                            F.softmax(reference(inputs) / 4.0, -1), reduction="batchmean") * 16.0
    assert torch.allclose(loss, expected, atol=1e-5)
    distiller.close()
    assert teacher.conv1.weight.is_contiguous()


class CountingTrain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 2)
        self.frozen = nn.BatchNorm1d(2)
        self.calls: list[bool] = []

    def train(self, mode: bool = True):
        self.calls.append(mode)
        return super().train(mode)


def test_restoring_modes_goes_through_the_users_train_override():
    model = CountingTrain().train()
    model.frozen.eval()  # a user keeping one submodule in eval mode
    model.calls.clear()
    modes = record_modes(model)
    model.eval()
    restore_modes(model, modes)
    assert model.calls == [False, True]
    assert model.training and model.inner.training and not model.frozen.training
    with temporary_mode(model, False):
        assert not model.training
    assert model.calls[-1] is True and not model.frozen.training


def test_eval_cache_cleared_by_train_override_does_not_leak_into_training():
    teacher, student = CachedBiasTransformer(), CachedBiasTransformer()
    distiller = Distiller(teacher, student, DistillationConfig(alpha=0.5))
    inputs, labels = torch.randn(4, 1, 12, 12), torch.randint(0, 5, (4,))
    for _ in range(2):  # a stale cache would break the second backward
        kd_step(distiller, student, inputs, labels).backward()
    attention = [m for m in teacher.modules() if isinstance(m, CachedBiasAttention)]
    assert all(m.bias_cache for m in attention)  # the eval-mode teacher uses its cache
    distiller.close()  # gives the teacher its training mode back through train()
    assert all(not m.bias_cache for m in attention)
