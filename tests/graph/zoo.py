"""Small models covering the structures channel pruning must handle (one pattern each)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compressor.models import create_model


class ConvChain(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DenseConcat(nn.Module):
    """DenseNet-style: every layer reads the concatenation of all previous outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
        self.layer2 = nn.Sequential(nn.BatchNorm2d(14), nn.ReLU(), nn.Conv2d(14, 6, 3, padding=1))
        self.head = nn.Linear(20, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.layer1(x)], dim=1)
        x = torch.cat([x, self.layer2(x)], dim=1)
        return self.head(x.mean(dim=(2, 3)))


class InceptionBranches(nn.Module):
    """Parallel branches of different widths concatenated, then a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 12, 3, padding=1))
        self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 4, 1))
        self.mix = nn.Conv2d(24, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.cat([self.a(x), self.b(x), self.c(x)], 1)
        return self.fc(F.relu(self.mix(F.relu(x))).amax(dim=(2, 3)))


class ChunkHalves(nn.Module):
    """ShuffleNetV2-style: chunk channels in halves, transform one half, concatenate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        left, right = self.stem(x).chunk(2, dim=1)
        x = torch.cat([left, self.branch(right)], dim=1)
        return self.fc(x.mean((2, 3)))


class ChannelShuffle(nn.Module):
    """Grouped 1x1 convolutions with a view/transpose channel shuffle in between."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.g1 = nn.Conv2d(16, 16, 1, groups=groups)
        self.g2 = nn.Conv2d(16, 16, 1, groups=groups)
        self.fc = nn.Linear(16, 10)

    def shuffle(self, x):
        batch, channels, height, width = x.shape
        x = x.view(batch, self.groups, channels // self.groups, height, width)
        return x.transpose(1, 2).contiguous().view(batch, channels, height, width)

    def forward(self, x):
        x = F.relu(self.g1(F.relu(self.stem(x))))
        x = F.relu(self.g2(self.shuffle(x)))
        return self.fc(x.mean((2, 3)))


class GroupedConv(nn.Module):
    """ResNeXt-style grouped 3x3 convolution (groups stay consistent)."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(3, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(16)
        self.expand = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.grouped(F.relu(self.reduce(x)))))
        return self.fc(self.expand(x).mean((2, 3)))


class SqueezeExcite(nn.Module):
    """Conv followed by squeeze-excitation gating."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head((x * gate).mean((2, 3)))


class FlattenLinear(nn.Module):
    """conv -> flatten -> linear: each channel owns a block of H*W input features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class LayerNormMLP(nn.Module):
    """Linear -> LayerNorm -> GELU -> Linear hidden dimensions."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(3 * 8 * 8, 48), nn.LayerNorm(48), nn.Linear(48, 24)
        self.out = nn.Linear(24, 10)

    def forward(self, x):
        x = F.gelu(self.norm(self.fc1(x.flatten(1))))
        return self.out(F.relu(self.fc2(x)))


class SeparateQKVAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and scaled_dot_product_attention."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, _ = x.shape

        def heads(t):
            return t.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.out(y.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))


class TokenTransformer(nn.Module):
    """Patch embedding, a post-norm encoder layer with separate q/k/v, and mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 4, 4)
        self.attn = SeparateQKVAttention()
        self.norm1, self.norm2 = nn.LayerNorm(32), nn.LayerNorm(32)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.norm1(tokens + self.attn(tokens))
        tokens = self.norm2(tokens + self.mlp(tokens))
        return self.head(tokens.mean(1))


class GroupNormNet(nn.Module):
    """Convolutions normalised with GroupNorm (whole groups are removed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.gn2 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(8, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.silu(self.gn1(self.conv1(x)))
        x = F.silu(self.gn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class SharedBlock(nn.Module):
    """The same conv block applied twice (its channels couple with themselves)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.block(self.block(x))
        return self.fc(x.mean((2, 3)))


class Nested(nn.Module):
    """Deeply nested containers with a residual inside a Sequential inside a ModuleDict."""

    class Inner(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                                    nn.BatchNorm2d(channels)), nn.ReLU())

        def forward(self, x):
            return x + self.body(x)

    def __init__(self) -> None:
        super().__init__()
        self.parts = nn.ModuleDict({"stem": nn.Conv2d(3, 10, 3, padding=1),
                                    "stages": nn.Sequential(self.Inner(10), self.Inner(10))})
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        return self.fc(self.parts["stages"](self.parts["stem"](x)).mean((2, 3)))


class EmbeddingClassifier(nn.Module):
    """Token embeddings, a hidden MLP and a classifier on integer inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 24)
        self.mlp = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 24))
        self.fc = nn.Linear(24, 4)

    def forward(self, tokens):
        x = self.embed(tokens)
        return self.fc((x + self.mlp(x)).mean(1))


def _reference(name: str, **kwargs):
    def build():
        return create_model(name, num_classes=10, in_channels=3, image_size=8, **kwargs)
    return build


# name -> (constructor, example input shape or "tokens")
ZOO = {
    "conv_chain": (ConvChain, (3, 8, 8)),
    "resnet8_residual": (_reference("resnet8", width_mult=0.5), (3, 8, 8)),
    "bottleneck_resnet50": (_reference("resnet50", width_mult=0.125), (3, 8, 8)),
    "dense_concat": (DenseConcat, (3, 8, 8)),
    "inception_branches": (InceptionBranches, (3, 8, 8)),
    "chunk_halves": (ChunkHalves, (3, 8, 8)),
    "channel_shuffle": (ChannelShuffle, (3, 8, 8)),
    "grouped_conv": (GroupedConv, (3, 8, 8)),
    "mobilenetv2_se": (_reference("mobilenetv2", width_mult=0.25, squeeze_excitation=True,
                                  last_channels=64), (3, 8, 8)),
    "squeeze_excite": (SqueezeExcite, (3, 8, 8)),
    "flatten_linear": (FlattenLinear, (3, 8, 8)),
    "layernorm_mlp": (LayerNormMLP, (3, 8, 8)),
    "vit_fused_qkv": (_reference("vit_tiny", dim=32, depth=2, patch_size=4), (3, 8, 8)),
    "transformer_separate_qkv": (TokenTransformer, (3, 8, 8)),
    "group_norm": (GroupNormNet, (3, 8, 8)),
    "shared_block": (SharedBlock, (3, 8, 8)),
    "nested_residual": (Nested, (3, 8, 8)),
    "embedding_mlp": (EmbeddingClassifier, "tokens"),
}


def calibrate_norms(model: nn.Module, spec, steps: int = 4) -> nn.Module:
    """Give batch norms realistic running statistics (fresh ones make deep nets output ~0)."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(example_input(spec, batch=8))
    return model.eval()


def example_input(spec, batch: int = 2) -> torch.Tensor:
    """Random inputs for a zoo entry."""
    if spec == "tokens":
        return torch.randint(0, 50, (batch, 6))
    return torch.randn(batch, *spec)
