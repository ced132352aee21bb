"""Architectures from torchvision, timm and transformers, as users build them (random
initialisation, small inputs; small configurations where the library offers them, so that the
whole zoo runs in minutes on two cores)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tests.thirdparty import packages


@dataclass(frozen=True)
class ZooModel:
    """One third-party architecture.

    Attributes:
        source: ``torchvision``, ``timm`` or ``transformers``.
        build: Builds the model (called after :func:`packages.enable`).
        input_shape: Shape of one input sample (images) or ``(sequence length,)`` (tokens).
        vocabulary: Token ids are drawn from ``[1, vocabulary)`` (text models), else 0.
        heads: Whether whole attention heads can be removed (head pruning is run too).
        max_ratio: The fraction of parameters left at 50 % channel sparsity must not exceed
            this (0.6 unless the architecture itself keeps widths fixed; ``why`` says how).
        why: Why channels stay, for architectures allowed a higher ratio.
    """

    source: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...] = (3, 32, 32)
    vocabulary: int = 0
    heads: bool = False
    max_ratio: float = 0.6
    why: str = ""

    def inputs(self, batch: int, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        if self.vocabulary:
            return torch.randint(1, self.vocabulary, (batch, *self.input_shape), generator=generator)
        return torch.randn((batch, *self.input_shape), generator=generator)


def _tv(name: str, **kwargs):
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(num_classes=10, **kwargs)
    return build



def _timm(name: str, **kwargs):
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, num_classes=10, pretrained=False, **kwargs)
    return build


def _hf(model: str, config: str, **kwargs):
    def build() -> nn.Module:
        import transformers

        return getattr(transformers, model)(getattr(transformers, config)(**kwargs))
    return build


def _tv_convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)], num_classes=10)


def _tv_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                             hidden_dim=64, mlp_dim=128, num_classes=10)


def _tv_swin() -> nn.Module:
    from torchvision.models import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                           window_size=[4, 4], num_classes=10)


def _tv_densenet() -> nn.Module:
    from torchvision.models import DenseNet

    return DenseNet(growth_rate=12, block_config=(2, 2, 2), num_init_features=24, num_classes=10)


_TEXT = dict(vocab_size=100, max_position_embeddings=32, num_labels=3)
_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)

ZOO: dict[str, ZooModel] = {
    "torchvision/resnet18": ZooModel("torchvision", _tv("resnet18")),
    "torchvision/mobilenet_v3_small": ZooModel("torchvision", _tv("mobilenet_v3_small")),
    "torchvision/shufflenet_v2": ZooModel("torchvision", _tv("shufflenet_v2_x0_5"), (3, 64, 64)),
    "torchvision/densenet": ZooModel("torchvision", _tv_densenet),
    "torchvision/regnet_x_400mf": ZooModel("torchvision", _tv("regnet_x_400mf")),
    "torchvision/efficientnet_b0": ZooModel("torchvision", _tv("efficientnet_b0")),
    "torchvision/squeezenet1_1": ZooModel("torchvision", _tv("squeezenet1_1"), (3, 64, 64)),
    "torchvision/mnasnet0_5": ZooModel("torchvision", _tv("mnasnet0_5")),
    "torchvision/convnext": ZooModel("torchvision", _tv_convnext),
    "torchvision/vit": ZooModel("torchvision", _tv_vit, heads=True),
    "torchvision/swin": ZooModel(
        "torchvision", _tv_swin, max_ratio=0.72,
        why="its attention computes the head width as the input width // num_heads, which ties "
            "heads and the residual stream together: only the MLPs can shrink"),
    "timm/resnet10t": ZooModel("timm", _timm("resnet10t")),
    "timm/efficientnet_b0": ZooModel("timm", _timm("efficientnet_b0")),
    "timm/mobilenetv3_small_050": ZooModel("timm", _timm("mobilenetv3_small_050")),
    "timm/ghostnet_050": ZooModel("timm", _timm("ghostnet_050")),
    "timm/regnetx_002": ZooModel("timm", _timm("regnetx_002")),
    "timm/rexnet_100": ZooModel("timm", _timm("rexnet_100")),
    "timm/cspresnet50": ZooModel("timm", _timm("cspresnet50")),
    "timm/convnext_atto": ZooModel("timm", _timm("convnext_atto")),
    "timm/poolformerv2_s12": ZooModel("timm", _timm("poolformerv2_s12")),
    "timm/vit_tiny": ZooModel("timm", _timm("vit_tiny_patch16_224", img_size=32, patch_size=8,
                                            depth=2), heads=True),
    "timm/deit_tiny_distilled": ZooModel(
        "timm", _timm("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=2),
        heads=True),
    "timm/swin_tiny": ZooModel(
        "timm", _timm("swin_tiny_patch4_window7_224", img_size=56, window_size=7,
                      depths=(1, 1, 1, 1), embed_dim=32, num_heads=(2, 2, 4, 4)),
        (3, 56, 56), heads=True),
    "timm/levit_128s": ZooModel("timm", _timm("levit_128s", img_size=64), (3, 64, 64), heads=True),
    "timm/mobilevit_xxs": ZooModel("timm", _timm("mobilevit_xxs"), (3, 64, 64), heads=True),
    "timm/efficientformer_l1": ZooModel("timm", _timm("efficientformer_l1"), (3, 224, 224),
                                        heads=True),
    "transformers/bert": ZooModel(
        "transformers", _hf("BertForSequenceClassification", "BertConfig", **_TEXT, **_SMALL),
        (16,), vocabulary=100, heads=True),
    "transformers/distilbert": ZooModel(
        "transformers", _hf("DistilBertForSequenceClassification", "DistilBertConfig",
                            vocab_size=100, max_position_embeddings=32, dim=64, n_layers=2,
                            n_heads=4, hidden_dim=128, num_labels=3),
        (16,), vocabulary=100, heads=True),
    "transformers/gpt2": ZooModel(
        "transformers", _hf("GPT2ForSequenceClassification", "GPT2Config", vocab_size=100,
                            n_positions=32, n_embd=64, n_layer=2, n_head=4, num_labels=3,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2),
        (16,), vocabulary=100, heads=True),
    "transformers/vit": ZooModel(
        "transformers", _hf("ViTForImageClassification", "ViTConfig", image_size=32,
                            patch_size=8, num_labels=10, **_SMALL), heads=True),
    "transformers/swin": ZooModel(
        "transformers", _hf("SwinForImageClassification", "SwinConfig", image_size=32,
                            patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                            window_size=4, num_labels=10), heads=True),
    "transformers/mobilevit": ZooModel(
        "transformers", _hf("MobileViTForImageClassification", "MobileViTConfig", image_size=64,
                            num_labels=10), (3, 64, 64), heads=True),
    "transformers/convnext": ZooModel(
        "transformers", _hf("ConvNextForImageClassification", "ConvNextConfig",
                            hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=10)),
    "transformers/resnet": ZooModel(
        "transformers", _hf("ResNetForImageClassification", "ResNetConfig", embedding_size=16,
                            hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)),
}


def build(name: str) -> nn.Module:
    """A model of the zoo (seeded) with the batch-norm statistics of its inputs, as a
    pretrained network has them (fresh statistics make a deep network's eval-mode outputs
    explode), in training mode as users hand it to a trainer."""
    packages.enable()
    torch.manual_seed(0)
    model = ZOO[name].build().train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batches
    with torch.no_grad():
        for seed in range(4):
            model(ZOO[name].inputs(8, seed=100 + seed))
    for norm in norms:  # statistics that follow the short fits of the tests (torch's default)
        norm.momentum = 0.1
    return model
