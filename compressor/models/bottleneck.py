"""A bottleneck ResNet-50-style network (1x1 -> 3x3 -> 1x1 blocks, expansion 4), CIFAR stem."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compressor._validation import check_float, check_int
from compressor.models.resnet import _init_weights, scaled_width

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


class BottleneckResNet(nn.Module):
    """Stages of bottleneck blocks (ResNet-50: 3, 4, 6, 3) with a 3x3 stride-1 stem.

    Args:
        blocks_per_stage: Number of bottleneck blocks per stage.
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        width_mult: Multiplier applied to the base widths 64/128/256/512.
    """

    def __init__(self, blocks_per_stage: list[int], num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        check_int("num_classes", num_classes, minimum=1)
        check_int("in_channels", in_channels, minimum=1)
        check_float("width_mult", width_mult, 0.0, low_inclusive=False)
        widths = [scaled_width(w, width_mult) for w in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for block_index in range(count):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(Bottleneck(channels, width, stride))
                channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            out = stage(out)
        return self.fc(torch.flatten(self.pool(out), 1))


def resnet50(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> BottleneckResNet:
    """ResNet-50 layout (3, 4, 6, 3 bottleneck blocks) with a CIFAR-style stem."""
    return BottleneckResNet([3, 4, 6, 3], num_classes, in_channels, width_mult)
