"""A MobileNetV2-style network: inverted residuals with depthwise convolutions, optional
squeeze-excitation, CIFAR-style strides (stride-1 stem) for 28x28 / 32x32 inputs."""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.resnet import _init_weights
from compressor.utils.checks import check_float, check_int

__all__ = ["SqueezeExcitation", "InvertedResidual", "MobileNetV2", "mobilenetv2"]

# (expansion t, output channels c, repeats n, first stride s), as in Sandler et al. 2018, with the
# first two strides set to 1 for small images.
DEFAULT_SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going below 90 % of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm and ReLU6 (or no activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU6())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, 1x1 reduce, ReLU, 1x1 expand, hard sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = make_divisible(channels / reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, optional SE, 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int,
                 squeeze_excitation: bool = False) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1))
        layers.append(ConvBNAct(hidden, hidden, 3, stride, groups=hidden))
        if squeeze_excitation:
            layers.append(SqueezeExcitation(hidden))
        layers.append(ConvBNAct(hidden, out_channels, 1, activation=False))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with a width multiplier and optional squeeze-excitation in every block.

    Args:
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        width_mult: Multiplier on every width (rounded to multiples of 8).
        squeeze_excitation: Add an SE module after each depthwise convolution.
        last_channels: Width of the final 1x1 convolution (before ``width_mult``).
        dropout: Dropout before the classifier.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                 squeeze_excitation: bool = False, last_channels: int = 1280,
                 dropout: float = 0.2) -> None:
        super().__init__()
        check_int("num_classes", num_classes, minimum=1)
        check_int("in_channels", in_channels, minimum=1)
        check_float("width_mult", width_mult, 0.0, low_inclusive=False)
        check_float("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, 1)]
        for expansion, width, repeats, stride in DEFAULT_SETTINGS:
            out_channels = make_divisible(width * width_mult)
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1,
                                               expansion, squeeze_excitation))
                channels = out_channels
        last = make_divisible(last_channels * max(1.0, width_mult))
        layers.append(ConvBNAct(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                squeeze_excitation: bool = False, last_channels: int = 1280,
                dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2-style network (see :class:`MobileNetV2`)."""
    return MobileNetV2(num_classes, in_channels, width_mult, squeeze_excitation, last_channels,
                       dropout)
