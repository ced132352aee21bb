"""A bottleneck ResNet-50-style network (1x1 -> 3x3 -> 1x1 blocks, expansion 4), CIFAR stem."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compressor.models.resnet import ResNet

__all__ = ["Bottleneck", "BottleneckResNet", "resnet50"]


class Bottleneck(nn.Module):
    """A 1x1 reduce, 3x3, 1x1 expand block with a projection shortcut when the shape changes."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


class BottleneckResNet(ResNet):
    """Stages of bottleneck blocks (ResNet-50: 3, 4, 6, 3) with a 3x3 stride-1 stem.

    Args:
        blocks_per_stage: Number of bottleneck blocks per stage.
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        width_mult: Multiplier applied to the base widths 64/128/256/512.
    """

    def __init__(self, blocks_per_stage: list[int], num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0) -> None:
        super().__init__(blocks_per_stage, [64, 128, 256, 512], num_classes, in_channels,
                         width_mult, block=Bottleneck)


def resnet50(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> BottleneckResNet:
    """ResNet-50 layout (3, 4, 6, 3 bottleneck blocks) with a CIFAR-style stem."""
    return BottleneckResNet([3, 4, 6, 3], num_classes, in_channels, width_mult)
