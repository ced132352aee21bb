"""Tiny versions of the reference models for quantization tests (16x16 grey-scale inputs)."""

from __future__ import annotations

import torch

from compressor.models import create_model

SHAPE = (1, 16, 16)
MODELS = {
    "resnet20": {"width_mult": 0.25},
    "mobilenetv2": {"width_mult": 0.25, "last_channels": 64},
    "vit_tiny": {"dim": 32, "depth": 2, "num_heads": 2, "image_size": 16},
}


def tiny(name: str) -> torch.nn.Module:
    return create_model(name, num_classes=10, in_channels=1, **MODELS[name])


def batches(count: int, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, *SHAPE, generator=generator) for _ in range(count)]


def train_steps(model: torch.nn.Module, steps: int, sizes=(8, 5, 16)) -> list[float]:
    """A few SGD steps on a fixed random labelling (batch sizes vary: the batch is dynamic)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(steps):
        x = torch.randn(sizes[step % len(sizes)], *SHAPE, generator=generator)
        y = (x.mean(dim=(1, 2, 3)) > 0).long()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
