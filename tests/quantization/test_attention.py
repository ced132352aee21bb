"""Attention in int8: fused ``scaled_dot_product_attention`` (the form of transformers' and timm's
models) is expanded into its two matrix products, which ONNX Runtime then runs as
``QLinearMatMul``; attention masks stay in float; GPT-2's ``Conv1D`` (``addmm`` with an
``(in, out)`` weight) is quantized per output column."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.export import export_onnx
from compressor.quantization import convert, prepare_qat, set_observers, set_qat_training
from compressor.quantization.capture import capture
from compressor.quantization.rewrites import SDPA_OPS
from tests.user_models import TinyGPT

TOKENS, DIM, HEADS = 6, 16, 2


class SdpaAttention(nn.Module):
    """Self-attention with the fused op, as transformers writes it (dropout only in training)."""

    def __init__(self, mask: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.mask, self.dropout = mask, dropout
        self.qkv, self.out = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        if mask == "float":  # a padding mask as transformers builds it: 0 or the float minimum
            keep = torch.ones(TOKENS, TOKENS).tril()
            self.register_buffer("bias", (1 - keep) * torch.finfo(torch.float32).min)
        elif mask == "bool":
            self.register_buffer("bias", torch.ones(TOKENS, TOKENS, dtype=torch.bool).tril())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(x.shape[0], TOKENS, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.bias if self.mask in ("float", "bool") else None,
            dropout_p=self.dropout if self.training else 0.0, is_causal=self.mask == "causal")
        return self.out(out.transpose(1, 2).reshape(x.shape[0], TOKENS, DIM))


class TwoBlocks(nn.Module):
    def __init__(self, mask: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SdpaAttention(mask, dropout) for _ in range(2))
        self.head = nn.Linear(DIM, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(dim=1))


class GPTLogits(nn.Module):
    """The logits of :class:`TinyGPT` (its cache object is not an ONNX output)."""

    def __init__(self) -> None:
        super().__init__()
        self.gpt = TinyGPT()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gpt(tokens)["logits"]


def inputs(seed: int, batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, TOKENS, DIM, generator=torch.Generator().manual_seed(seed))


MASKS = ["none", "float", "bool", "causal"]


@pytest.mark.parametrize("mask", MASKS)
def test_expanded_attention_computes_what_the_fused_op_computes(mask):
    torch.manual_seed(0)
    model = TwoBlocks(mask).eval()
    fused = capture(model, inputs(0), training=False, expand_attention_ops=False)
    expanded = capture(model, inputs(0), training=False)
    assert any(n.target in SDPA_OPS for n in fused.graph.nodes)
    assert not any(n.target in SDPA_OPS for n in expanded.graph.nodes)
    x = inputs(1, batch=5)  # another batch size: the batch stays dynamic
    torch.testing.assert_close(expanded(x), model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)


def qat_export(model: nn.Module, batch, tmp_path, steps: int = 3):
    """A few QAT steps (loss on the output's mean), then convert and export."""
    prepared = prepare_qat(model, batch(0))
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01)
    for step in range(steps):
        loss = prepared(batch(10 + step)).float().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    set_qat_training(prepared, False)
    set_observers(prepared, False)
    converted = convert(prepared)
    return export_onnx(converted, tmp_path / "int8.onnx", batch(1), latency_batches=())


@pytest.mark.parametrize("mask, dropout", [("none", 0.1), ("float", 0.0), ("bool", 0.0),
                                           ("causal", 0.1)])
def test_both_attention_products_run_integer_kernels_and_masks_stay_exact(mask, dropout, tmp_path):
    torch.manual_seed(0)
    report = qat_export(TwoBlocks(mask, dropout), inputs, tmp_path)
    assert report.accepted and report.parity.passed, report.parity.reason
    assert report.parity.top1_agreement == 1.0
    assert report.audit.float_compute == 0, report.audit.float_nodes
    assert report.audit.int8_ops["QLinearMatMul"] == 2 * 2  # q @ k^T and weights @ v, 2 blocks
    assert report.audit.int8_ops["QGemm"] == 2 * 2 + 1  # linears on tokens run as 2-D QGemm


def test_gpt2_style_transposed_linears_and_causal_attention_run_in_int8(tmp_path):
    torch.manual_seed(0)

    def tokens(seed: int, batch: int = 8) -> torch.Tensor:
        return torch.randint(0, 50, (batch, 8), generator=torch.Generator().manual_seed(seed))

    report = qat_export(GPTLogits(), tokens, tmp_path)
    assert report.accepted and report.parity.passed, report.parity.reason
    assert report.audit.float_compute == 0, report.audit.float_nodes
    assert report.audit.int8_ops["QLinearMatMul"] == 2 * 2
    assert report.audit.int8_ops["QGemm"] == 4 * 2 + 1  # four addmm per block, the score head  # the four addmm projections of each block
