"""Tiny models shared by the distillation tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinyConvNet(nn.Module):
    """``features`` (conv + ReLU, ``channels`` maps of 8x8) followed by a linear ``head``."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(channels * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def make_batches(count: int = 2, size: int = 8, classes: int = 3, seed: int = 1):
    """``count`` fixed (inputs, labels) batches of 1x8x8 images."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=generator),
             torch.randint(0, classes, (size,), generator=generator)) for _ in range(count)]


def reference_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss written out: T² · mean_i Σ_c p_t (log p_t − log p_s)."""
    p_teacher = torch.softmax(teacher_logits / temperature, dim=1)
    log_p_student = torch.log_softmax(student_logits / temperature, dim=1)
    kl = (p_teacher * (torch.log(p_teacher) - log_p_student)).sum(dim=1).mean()
    return kl * temperature**2


def reference_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """``(1 - alpha) * cross-entropy + alpha * reference_kd``."""
    task = F.cross_entropy(student_logits, labels)
    return (1 - alpha) * task + alpha * reference_kd(student_logits, teacher_logits, temperature)
