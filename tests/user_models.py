"""Models written the way users and third-party libraries write them, one risky pattern each:
``.view`` after convolutions, a cache that a ``train()`` override clears, a transposed-weight
linear layer (GPT-2's ``Conv1D``), a channels-first LayerNorm (ConvNeXt), a relative-position
bias table (Swin, LeViT) and width attributes used in ``forward`` (ViT)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ViewFlattenNet(nn.Module):
    """A classic MNIST classifier as shipped with pretrained weights: three convolutions, max
    pooling, no batch norm, ``x.view(x.size(0), -1)`` before two fully connected layers."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class CachedBiasAttention(nn.Module):
    """Attention with a learned bias per head and relative position, gathered from a table.

    In eval mode the gathered biases are cached (keyed by device); the ``train()`` override
    clears the cache, as timm's LeViT and EfficientFormer do. Code that changes modes without
    calling ``train()`` leaves a stale cache behind.
    """

    def __init__(self, dim: int = 32, heads: int = 4, tokens: int = 9) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.randn(heads, tokens) * 0.1)
        positions = torch.arange(tokens)
        self.register_buffer("bias_index", (positions[:, None] - positions[None, :]).abs(),
                             persistent=False)
        self.bias_cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> CachedBiasAttention:
        super().train(mode)
        if mode and self.bias_cache:
            self.bias_cache = {}
        return self

    def biases(self, device: torch.device) -> torch.Tensor:
        if self.training:
            return self.attention_biases[:, self.bias_index]
        key = str(device)
        if key not in self.bias_cache:
            self.bias_cache[key] = self.attention_biases[:, self.bias_index]
        return self.bias_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5 + self.biases(x.device)
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens,
                                                               self.num_heads * self.head_dim)
        return self.proj(out)


class CachedBiasTransformer(nn.Module):
    """Patch embedding, two blocks of :class:`CachedBiasAttention` + MLP, mean-pooled head."""

    def __init__(self, dim: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 4, stride=4)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.LayerNorm(dim), "attn": CachedBiasAttention(dim),
            "norm2": nn.LayerNorm(dim),
            "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))})
            for _ in range(2))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = x + block["attn"](block["norm1"](x))
            x = x + block["mlp"](block["norm2"](x))
        return self.head(x.mean(1))
