"""CIFAR-style residual networks with basic blocks (ResNet-8/20/56/110 and the wider ResNet-18).

The stem is a 3x3 convolution with stride 1 (no max-pool), as in He et al. 2016 §4.2, so the
networks suit 28x28 (Fashion-MNIST) and 32x32 (CIFAR) inputs. Shortcuts that change shape use a
1x1 convolution with batch norm (option B).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compressor.errors import ConfigError
from compressor.utils.checks import check_float, check_int

__all__ = ["BasicBlock", "ResNet", "cifar_resnet", "resnet18"]


def scaled_width(channels: int, width_mult: float) -> int:
    """Scale a channel count by ``width_mult``, never below 1."""
    return max(1, int(round(channels * width_mult)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity or projection shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stack of residual stages followed by global average pooling and a linear classifier.

    Args:
        blocks_per_stage: Number of blocks in each stage.
        stage_widths: Width of each stage (before ``width_mult``); a stage outputs
            ``width * block.expansion`` channels.
        num_classes: Number of output logits.
        in_channels: Channels of the input images (1 for grey-scale, 3 for RGB).
        width_mult: Multiplier applied to every stage width.
        block: The residual block: ``block(in_channels, width, stride)`` with an ``expansion``.
    """

    def __init__(self, blocks_per_stage: list[int], stage_widths: list[int], num_classes: int = 10,
                 in_channels: int = 3, width_mult: float = 1.0,
                 block: type[nn.Module] = BasicBlock) -> None:
        super().__init__()
        check_int("num_classes", num_classes, minimum=1)
        check_int("in_channels", in_channels, minimum=1)
        check_float("width_mult", width_mult, 0.0, low_inclusive=False)
        widths = [scaled_width(w, width_mult) for w in stage_widths]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(count):
                blocks.append(block(channels, width, stride if block_index == 0 else 1))
                channels = width * block.expansion
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


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0) -> ResNet:
    """ResNet-``depth`` for CIFAR (depth = 6n + 2: 8, 20, 32, 44, 56, 110), widths 16/32/64."""
    check_int("depth", depth, minimum=8)
    if (depth - 2) % 6:
        raise ConfigError(f"`depth` must be 6n + 2 (8, 20, 32, 44, 56, 110, ...), got {depth}.")
    n = (depth - 2) // 6
    return ResNet([n, n, n], [16, 32, 64], num_classes, in_channels, width_mult)


def resnet18(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """The CIFAR variant of ResNet-18: four stages of two blocks, widths 64/128/256/512."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, width_mult)


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit batch-norm scales, small linear weights."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
