"""Layer handlers: how a module's attributes follow when its tensors lose channels, and (for
custom layers the tracer cannot see through) how channels flow through it.

Built-in handlers cover ``torch.nn`` convolutions, linear layers, normalisations and embeddings.
Register one for a custom layer with :func:`register_handler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from compressor.errors import InvalidTypeError

__all__ = ["LayerHandler", "register_handler", "unregister_handler", "handler_for",
           "attribute_updates"]

AttributeUpdate = Callable[[nn.Module], dict[str, Any]]


@dataclass(frozen=True)
class LayerHandler:
    """What compressor needs to know about a module type.

    Attributes:
        update: Called after the module's parameters and buffers were sliced; returns the
            attributes to set so the module stays consistent (e.g. ``{"out_features": 12}``).
        channelwise: Treat the module as a black box whose output channel ``c`` depends only on
            input channel ``c`` (its own parameters have one entry per channel along dimension
            0). Use it for custom layers built from operations the tracer does not know.
        channel_dim: The channel dimension of the module's input and output (for ``channelwise``).
        propagate: Propagate channel labels through a call of the module as a black box:
            ``propagate(propagator, module, path, inputs, outputs)`` returns the labels of each
            output node (see :func:`compressor.graph.attention.propagate_multihead_attention`).
    """

    update: AttributeUpdate | None = None
    channelwise: bool = False
    channel_dim: int = 1
    propagate: Callable[..., dict[Any, Any]] | None = None


_HANDLERS: dict[type[nn.Module], LayerHandler] = {}
# Layers of third-party libraries, by qualified class name (the library need not be installed).
_NAMED_HANDLERS: dict[str, LayerHandler] = {}


def register_handler(module_type: type[nn.Module], handler: LayerHandler | AttributeUpdate) -> None:
    """Register how compressor handles ``module_type`` (and its subclasses).

    Args:
        module_type: The custom layer class.
        handler: A :class:`LayerHandler`, or just its ``update`` function.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise InvalidTypeError(f"`module_type` must be an nn.Module subclass, got {module_type!r}.")
    if callable(handler) and not isinstance(handler, LayerHandler):
        handler = LayerHandler(update=handler)
    if not isinstance(handler, LayerHandler):
        raise InvalidTypeError(f"`handler` must be a LayerHandler or a function, got {handler!r}.")
    _HANDLERS[module_type] = handler


def unregister_handler(module_type: type[nn.Module]) -> None:
    """Remove a handler registered with :func:`register_handler`."""
    _HANDLERS.pop(module_type, None)


def handler_for(module: nn.Module) -> LayerHandler | None:
    """The handler of ``module``'s type (the most specific registered base class), if any."""
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
        named = _NAMED_HANDLERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if named is not None:
            return named
    return None


def attribute_updates(module: nn.Module) -> dict[str, Any]:
    """Attributes ``module`` needs after its tensors were sliced (empty if none are known)."""
    handler = handler_for(module)
    return dict(handler.update(module)) if handler is not None and handler.update else {}


def _conv(module: nn.Module) -> dict[str, Any]:
    out_channels, in_per_group = module.weight.shape[0], module.weight.shape[1]
    groups = module.groups
    if groups == 1:
        return {"out_channels": out_channels, "in_channels": in_per_group}
    old_in_per_group = module.in_channels // module.groups
    if old_in_per_group == 1:  # depthwise: whole groups are removed
        multiplier = module.out_channels // module.groups
        groups = out_channels // multiplier
        return {"out_channels": out_channels, "in_channels": groups, "groups": groups}
    return {"out_channels": out_channels, "in_channels": in_per_group * groups}


def _linear(module: nn.Module) -> dict[str, Any]:
    return {"out_features": module.weight.shape[0], "in_features": module.weight.shape[1]}


def _batch_norm(module: nn.Module) -> dict[str, Any]:
    tensor = module.weight if module.weight is not None else module.running_mean
    return {"num_features": tensor.shape[0]} if tensor is not None else {}


def _group_norm(module: nn.Module) -> dict[str, Any]:
    if module.weight is None:
        return {}
    channels = module.weight.shape[0]
    per_group = module.num_channels // module.num_groups
    return {"num_channels": channels, "num_groups": channels // per_group}


def _layer_norm(module: nn.Module) -> dict[str, Any]:
    if module.weight is None:
        return {}
    return {"normalized_shape": tuple(module.weight.shape)}


def _transposed_linear(module: nn.Module) -> dict[str, Any]:
    return {"nx": module.weight.shape[0], "nf": module.weight.shape[1]}


def _embedding(module: nn.Module) -> dict[str, Any]:
    return {"embedding_dim": module.weight.shape[1]}


def _prelu(module: nn.Module) -> dict[str, Any]:
    return {"num_parameters": module.weight.shape[0]}


for _type in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_handler(_type, _conv)
register_handler(nn.Linear, _linear)
for _type in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d,
              nn.InstanceNorm2d, nn.InstanceNorm3d):
    register_handler(_type, _batch_norm)
register_handler(nn.GroupNorm, _group_norm)
register_handler(nn.LayerNorm, _layer_norm)
register_handler(nn.RMSNorm, _layer_norm)
register_handler(nn.Embedding, _embedding)
register_handler(nn.PReLU, _prelu)
# Hugging Face GPT-2's projections: a linear layer with an ``(in, out)`` weight.
_NAMED_HANDLERS["transformers.pytorch_utils.Conv1D"] = LayerHandler(update=_transposed_linear)
