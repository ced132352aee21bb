"""Name -> constructor registry of the reference architectures."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from compressor.errors import UnknownNameError
from compressor.models.bottleneck import resnet50
from compressor.models.mlp import mlp
from compressor.models.mobilenetv2 import mobilenetv2
from compressor.models.resnet import cifar_resnet, resnet18
from compressor.models.vit import vit_tiny
from compressor.utils.checks import accepted_parameters, check_kwargs

__all__ = ["MODELS", "create_model", "list_models"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "resnet8": functools.partial(cifar_resnet, 8),
    "resnet20": functools.partial(cifar_resnet, 20),
    "resnet56": functools.partial(cifar_resnet, 56),
    "resnet110": functools.partial(cifar_resnet, 110),
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenetv2": mobilenetv2,
    "vit_tiny": vit_tiny,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3,
                 image_size: int | None = None, **kwargs: object) -> nn.Module:
    """Build a reference architecture by name.

    Args:
        name: One of :func:`list_models` (case-insensitive).
        num_classes: Number of output logits.
        in_channels: Channels of the input images (1 for grey-scale).
        image_size: Input side length; passed on only to models that need it (ViT, MLP),
            convolutional networks accept any size.
        **kwargs: Model-specific options such as ``width_mult`` or ``squeeze_excitation``.

    Raises:
        UnknownNameError: ``name`` is not a known model.
        ConfigError: a keyword argument is not accepted by the model.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise UnknownNameError("model", name, MODELS)
    factory = MODELS[key]
    if image_size is not None and "image_size" in accepted_parameters(factory):
        kwargs["image_size"] = image_size
    check_kwargs(f"Model {key!r}", factory, kwargs, reserved=("num_classes", "in_channels"))
    return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
