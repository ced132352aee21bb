"""A multi-layer perceptron classifier for flattened images or feature vectors."""

from __future__ import annotations

import torch
from torch import nn

from compressor.utils.checks import check_float, check_int

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Flatten, then ``Linear -> BatchNorm1d -> ReLU`` hidden layers and a linear classifier.

    Args:
        num_classes: Number of output logits.
        in_channels: Channels of the input (``in_features = in_channels * image_size**2``).
        image_size: Side of the square input; use 1 for plain feature vectors.
        hidden: Widths of the hidden layers.
        dropout: Dropout after each hidden layer.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 hidden: tuple[int, ...] = (512, 256), dropout: float = 0.0) -> None:
        super().__init__()
        check_int("num_classes", num_classes, minimum=1)
        check_int("in_channels", in_channels, minimum=1)
        check_int("image_size", image_size, minimum=1)
        check_float("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for index, out in enumerate(hidden):
            check_int(f"hidden[{index}]", out, minimum=1)
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
        hidden: tuple[int, ...] = (512, 256), dropout: float = 0.0) -> MLP:
    """MLP classifier (see :class:`MLP`)."""
    return MLP(num_classes, in_channels, image_size, tuple(hidden), dropout)
