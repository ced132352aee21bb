"""Channel and head removal on the patterns of third-party models (written for the tests, one
risky pattern each; the third-party zoo runs the real ones)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compressor.graph import (
    CompactMultiheadAttention,
    compaction_history,
    load_compacted,
    register_handler,
    unregister_handler,
)
from compressor.pruning import Pruner, PruningConfig
from compressor.utils.modules import count_parameters
from tests.user_models import (
    TRANSPOSED_LINEAR_HANDLER,
    CachedBiasAttention,
    CachedBiasTransformer,
    KeyValueCache,
    TinyConvNeXt,
    TinyGPT,
    TinyTorchvisionViT,
    TransposedLinear,
)


@pytest.fixture(autouse=True)
def _transposed_linear_handler():
    register_handler(TransposedLinear, TRANSPOSED_LINEAR_HANDLER)
    yield
    unregister_handler(TransposedLinear)


def logits(output):
    return output["logits"] if isinstance(output, dict) else output


def prune_and_compact(model, inputs, granularity="channel", sparsity=0.5):
    """Masks at ``sparsity``, then compaction; returns (masked output, compacted output)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no group of these models may be excluded
        pruner = Pruner(model, PruningConfig(granularity=granularity, sparsity=sparsity, criterion="l1"), inputs)
    pruner.update()
    with torch.no_grad():
        masked = logits(model(inputs))
    pruner.compact()
    with torch.no_grad():
        compacted = logits(model(inputs))
    return masked, compacted


CASES = {
    "gpt": (TinyGPT, lambda: torch.randint(0, 50, (2, 8))),
    "cached_bias": (CachedBiasTransformer, lambda: torch.randn(2, 1, 12, 12)),
    "convnext": (TinyConvNeXt, lambda: torch.randn(2, 1, 16, 16)),
    "torchvision_vit": (TinyTorchvisionViT, lambda: torch.randn(2, 1, 12, 12)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_half_of_the_channels_go_and_outputs_equal_the_masked_model(name):
    build, make_inputs = CASES[name]
    model, inputs = build().eval(), make_inputs()
    before = count_parameters(model)
    masked, compacted = prune_and_compact(model, inputs)
    assert compacted.shape == masked.shape
    assert (compacted - masked).abs().max() <= 1e-5
    assert count_parameters(model) <= 0.6 * before


@pytest.mark.parametrize("name", ["gpt", "cached_bias", "torchvision_vit"])
def test_heads_go_and_outputs_equal_the_masked_model(name):
    build, make_inputs = CASES[name]
    model, inputs = build().eval(), make_inputs()
    masked, compacted = prune_and_compact(model, inputs, "head")
    assert (compacted - masked).abs().max() <= 1e-5


def test_gpt_cache_output_shrinks_with_the_heads_and_addmm_layers_follow():
    model, inputs = TinyGPT().eval(), torch.randint(0, 50, (2, 8))
    prune_and_compact(model, inputs, "head")
    block = model.blocks[0]
    assert block.c_attn.weight.shape == (32, 3 * 16) and block.c_attn.nf == 48
    assert block.split_size == 16 and block.c_proj.nx == 16
    with torch.no_grad():
        cache = model(inputs)["past_key_values"]
    assert isinstance(cache, KeyValueCache) and cache.tensors[0].shape[2] == 2  # 2 of 4 heads


def test_eval_cache_is_refreshed_after_compaction():
    model, inputs = CachedBiasTransformer().eval(), torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        model(inputs)  # fills the eval-mode caches with 4-head biases
    prune_and_compact(model, inputs, "head")
    attention = model.blocks[0]["attn"]
    assert isinstance(attention, CachedBiasAttention) and attention.num_heads == 2
    with torch.no_grad():
        cached = model(inputs)
        model.train()
        fresh = model(inputs)
    assert torch.allclose(cached, fresh, atol=1e-6)


def test_convnext_channels_first_norms_follow():
    model, inputs = TinyConvNeXt().eval(), torch.randn(2, 1, 16, 16)
    prune_and_compact(model, inputs)
    assert model.stem[1].normalized_shape == (8,) and model.block1.gamma.shape == (8,)
    assert model.down[0].normalized_shape == (8,)


def test_torchvision_vit_residual_width_follows_and_the_model_reloads(tmp_path):
    model, inputs = TinyTorchvisionViT().eval(), torch.randn(2, 1, 12, 12)
    prune_and_compact(model, inputs)
    attention = model.layers[0]["self_attention"]
    assert model.hidden_dim == 16 and model.class_token.shape == (1, 1, 16)
    assert isinstance(attention, CompactMultiheadAttention) and attention.embed_dim == 16
    assert attention.num_heads == 4 and attention.in_proj_weight.shape == (96, 16)  # heads stay
    fresh = load_compacted(TinyTorchvisionViT(), {"state_dict": model.state_dict(),
                                                  "history": compaction_history(model)}).eval()
    with torch.no_grad():
        assert torch.equal(fresh(inputs), model(inputs))
    path = tmp_path / "vit.onnx"
    torch.onnx.export(model, (inputs,), str(path), dynamo=True, external_data=False, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(inputs).numpy()
    actual = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_compact_attention_computes_what_multihead_attention_computes(batch_first, need_weights):
    reference = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    compact = copy.deepcopy(reference)
    compact.__class__ = CompactMultiheadAttention
    shape = (2, 5, 16) if batch_first else (5, 2, 16)
    query, key = torch.randn(shape), torch.randn(shape[:-1] + (16,))
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for kwargs in ({}, {"key_padding_mask": padding}, {"attn_mask": causal},
                   {"attn_mask": causal, "key_padding_mask": padding},
                   {"attn_mask": torch.randn(8, 5, 5)}):
        with torch.no_grad():
            expected = reference(query, key, key, need_weights=need_weights, **kwargs)
            actual = compact(query, key, key, need_weights=need_weights, **kwargs)
        assert torch.allclose(actual[0], expected[0], atol=1e-5)
        if need_weights:
            assert torch.allclose(actual[1], expected[1], atol=1e-6)
    with torch.no_grad():  # unbatched
        single = query[0] if batch_first else query[:, 0]
        assert torch.allclose(compact(single, single, single)[0],
                              reference(single, single, single)[0], atol=1e-5)
