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


class TransposedLinear(nn.Module):
    """GPT-2's ``Conv1D``: a linear layer whose weight is stored as ``(in, out)`` and applied
    with ``addmm`` on a flattened input; ``nf`` (outputs) is used to restore the shape.

    Its two widths may be equal, so which attribute follows which dimension is ambiguous: like
    any such custom layer it needs a handler (:data:`TRANSPOSED_LINEAR_HANDLER`; the one of
    ``transformers``' own ``Conv1D`` is built in).
    """

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(shape)


def _transposed_linear_widths(module: nn.Module) -> dict[str, int]:
    return {"nx": module.weight.shape[0], "nf": module.weight.shape[1]}


TRANSPOSED_LINEAR_HANDLER = _transposed_linear_widths


class KeyValueCache:
    """An object returned next to the logits that ``torch.export`` cannot flatten."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors


class TinyGPT(nn.Module):
    """A GPT-2-style language model: token and position embeddings, fused q/k/v split with
    ``split(self.split_size)``, causal SDPA, a zero-size buffer and a cache in the output."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(16, dim)
        self.register_buffer("masked_bias", torch.empty(0), persistent=False)
        self.blocks = nn.ModuleList(_GPTBlock(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 3, bias=False)

    def forward(self, tokens: torch.Tensor) -> dict[str, object]:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        cache = []
        for block in self.blocks:
            x, present = block(x)
            cache.append(present)
        logits = self.score(self.ln_f(x))[:, -1]
        return {"logits": logits, "past_key_values": KeyValueCache(cache)}


class _GPTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.split_size = heads, dim // heads, dim
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.c_proj = TransposedLinear(3 * dim, dim), TransposedLinear(dim, dim)
        self.c_fc, self.mlp_proj = TransposedLinear(4 * dim, dim), TransposedLinear(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.c_attn(self.ln_1(x)).split(self.split_size, dim=2)
        heads = [t.view(*t.shape[:-1], -1, self.head_dim).transpose(1, 2) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*heads, is_causal=True)
        x = x + self.c_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))
        return x, torch.stack(heads[1:])


class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's channels-first LayerNorm: normalises NCHW over C through a permute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    """Patchify stem + LayerNorm2d, depthwise 7x7, channels-last LayerNorm and MLP with a
    layer-scale parameter, a LayerNorm2d downsample, global pooling."""

    def __init__(self, dims: tuple[int, int] = (16, 32), classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, dims[0], 2, stride=2), LayerNorm2d(dims[0]))
        self.block1 = _ConvNeXtBlock(dims[0])
        self.down = nn.Sequential(LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, stride=2))
        self.block2 = _ConvNeXtBlock(dims[1])
        self.head = nn.Linear(dims[1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.head(x.mean((2, 3)))


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.fc2(F.gelu(self.fc1(y)))
        return x + y.permute(0, 3, 1, 2)


class TinyTorchvisionViT(nn.Module):
    """torchvision's ViT layout: a patch projection reshaped with ``self.hidden_dim``, a class
    token and a position embedding, ``nn.MultiheadAttention`` blocks, the class token read."""

    def __init__(self, hidden_dim: int = 32, heads: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.hidden_dim, self.patch_size = hidden_dim, 4
        self.conv_proj = nn.Conv2d(1, hidden_dim, 4, stride=4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 10, hidden_dim) * 0.02)
        self.layers = nn.ModuleList(nn.ModuleDict({
            "ln_1": nn.LayerNorm(hidden_dim),
            "self_attention": nn.MultiheadAttention(hidden_dim, heads, batch_first=True),
            "ln_2": nn.LayerNorm(hidden_dim),
            "mlp": nn.Sequential(nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(),
                                 nn.Linear(2 * hidden_dim, hidden_dim))}) for _ in range(2))
        self.ln = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        for layer in self.layers:
            y = layer["ln_1"](x)
            x = x + layer["self_attention"](y, y, y, need_weights=False)[0]
            x = x + layer["mlp"](layer["ln_2"](x))
        return self.head(self.ln(x)[:, 0])
