"""A small Vision Transformer: patch embedding, pre-norm encoder layers (multi-head
self-attention with a fused q/k/v projection, LayerNorm, MLP) and a class-token head."""

from __future__ import annotations

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.utils.checks import check_int

__all__ = ["MultiHeadSelfAttention", "TransformerEncoderLayer", "VisionTransformer", "vit_tiny"]


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with explicit matmuls (exportable and quantizable).

    ``num_heads`` and ``head_dim`` are attributes (not derived from the input width) so that
    attention heads can be removed physically.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads}).")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(out)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier for small images.

    Args:
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        image_size: Height and width of the (square) input images.
        patch_size: Side of each square patch; must divide ``image_size``.
        dim: Token width.
        depth: Number of encoder layers.
        num_heads: Attention heads per layer.
        mlp_ratio: Hidden width of each MLP relative to ``dim``.
        dropout: Dropout inside the MLPs.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 28,
                 patch_size: int = 4, dim: int = 64, depth: int = 4, num_heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in [("num_classes", num_classes), ("in_channels", in_channels),
                            ("image_size", image_size), ("patch_size", patch_size), ("dim", dim),
                            ("depth", depth), ("num_heads", num_heads)]:
            check_int(name, value, minimum=1)
        if image_size % patch_size:
            raise ConfigError(f"`patch_size` ({patch_size}) must divide `image_size` ({image_size}).")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for layer in self.layers:
            tokens = layer(tokens)
        return self.head(self.norm(tokens)[:, 0])


def vit_tiny(num_classes: int = 10, in_channels: int = 3, image_size: int = 28,
             patch_size: int = 4, dim: int = 64, depth: int = 4, num_heads: int = 4,
             mlp_ratio: float = 2.0, dropout: float = 0.0) -> VisionTransformer:
    """A 4-layer, 4-head, 64-wide ViT (about 0.14 M parameters) for 28x28 / 32x32 images."""
    return VisionTransformer(num_classes, in_channels, image_size, patch_size, dim, depth,
                             num_heads, mlp_ratio, dropout)
