"""Reference architectures in plain PyTorch that cover the structures compression must handle:
residual and bottleneck blocks, depthwise convolutions with squeeze-excitation, multi-head
attention with LayerNorm, and plain MLPs."""

from compressor.models.bottleneck import BottleneckResNet, resnet50
from compressor.models.mlp import MLP, mlp
from compressor.models.mobilenetv2 import MobileNetV2, mobilenetv2
from compressor.models.registry import MODELS, create_model, list_models
from compressor.models.resnet import ResNet, cifar_resnet, resnet18
from compressor.models.vit import MultiHeadSelfAttention, VisionTransformer, vit_tiny

__all__ = [
    "MODELS", "create_model", "list_models",
    "ResNet", "cifar_resnet", "resnet18",
    "BottleneckResNet", "resnet50",
    "MobileNetV2", "mobilenetv2",
    "VisionTransformer", "MultiHeadSelfAttention", "vit_tiny",
    "MLP", "mlp",
]
