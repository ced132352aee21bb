import types

import pytest
import torch

from compressor.distillation import (
    attention_map,
    attention_transfer_loss,
    hint_loss,
    logits_of,
    mix_task_and_kd,
    soft_target_loss,
)
from compressor.errors import ConfigError, InvalidTypeError
from tests.distillation.nets import reference_kd


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_target_loss_matches_written_out_formula(temperature):
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    expected = reference_kd(student, teacher, temperature)
    assert torch.allclose(soft_target_loss(student, teacher, temperature), expected, atol=1e-6)


def test_soft_target_loss_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(4, 7)
    assert soft_target_loss(logits, logits.clone(), 3.0).abs() < 1e-6
    assert soft_target_loss(logits, torch.randn(4, 7), 3.0) > 0


def test_soft_target_loss_averages_over_sequence_positions():
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    flat = reference_kd(student.reshape(6, 5), teacher.reshape(6, 5), 2.0)
    assert torch.allclose(soft_target_loss(student, teacher, 2.0), flat, atol=1e-6)


def test_soft_target_gradient_flows_to_student_only():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3)
    soft_target_loss(student, teacher, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_incompatible_output_shapes_show_both_shapes():
    with pytest.raises(ConfigError, match=r"student \(4, 10\) vs teacher \(4, 12\)"):
        soft_target_loss(torch.randn(4, 10), torch.randn(4, 12), 4.0)


def test_mix_follows_the_documented_convention():
    task, kd = torch.tensor(2.0), torch.tensor(10.0)
    assert mix_task_and_kd(task, kd, 0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 10)
    assert mix_task_and_kd(task, kd, 0.0).item() == pytest.approx(2.0)
    with pytest.raises(InvalidTypeError, match="scalar"):
        mix_task_and_kd(torch.ones(3), kd, 0.5)


def test_logits_of_accepts_tensors_mappings_and_objects():
    logits = torch.randn(2, 3)
    assert logits_of(logits, "student") is logits
    assert logits_of({"logits": logits}, "student") is logits
    assert logits_of(types.SimpleNamespace(logits=logits), "student") is logits
    with pytest.raises(InvalidTypeError, match="teacher's output is a tuple"):
        logits_of((logits,), "teacher")


def test_hint_losses():
    student, teacher = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    assert torch.allclose(hint_loss(student, teacher, "mse"), ((student - teacher) ** 2).mean())
    assert hint_loss(student, student * 3.0, "cosine").abs() < 1e-6  # scale-invariant
    assert hint_loss(student, -student, "cosine").item() == pytest.approx(2.0)
    with pytest.raises(ConfigError, match=r"student \(3, 4, 2, 2\) vs teacher \(3, 5, 2, 2\)"):
        hint_loss(student, torch.randn(3, 5, 2, 2))


def test_attention_map_is_normalised_and_independent_of_channel_count():
    feature = torch.randn(2, 3, 4, 4)
    maps = attention_map(feature)
    assert maps.shape == (2, 16)
    assert torch.allclose(maps.norm(dim=1), torch.ones(2))
    doubled = torch.cat([feature, feature], dim=1)  # same energy per position
    assert torch.allclose(attention_map(doubled), maps, atol=1e-6)


def test_attention_transfer_loss():
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 7, 4, 4)
    assert attention_transfer_loss(student, student.clone()).abs() < 1e-6
    loss = attention_transfer_loss(student, teacher)
    expected = (attention_map(student) - attention_map(teacher)).pow(2).sum(1).mean()
    assert 0 < loss <= 2 and torch.allclose(loss, expected)
    with pytest.raises(ConfigError, match=r"same batch and spatial size"):
        attention_transfer_loss(student, torch.randn(2, 3, 2, 2))
    with pytest.raises(ConfigError, match="feature maps"):
        attention_map(torch.randn(2, 3))
