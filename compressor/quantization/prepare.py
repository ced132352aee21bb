"""``prepare_qat`` / ``prepare_ptq``: capture a model and insert fake quantization (QAT) or
observers (PTQ) with :class:`~compressor.quantization.quantizer.OrtQuantizer`."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.fx import GraphModule

from compressor.errors import ConfigError, InvalidTypeError
from compressor.quantization.capture import capture
from compressor.quantization.config import QuantizationConfig
from compressor.quantization.controls import set_qat_training
from compressor.quantization.info import INFO_KEY, QuantizationInfo
from compressor.quantization.modes import mark_training, route_train_eval
from compressor.utils.names import matches

__all__ = ["prepare_qat", "prepare_ptq"]

def _check_config(config: Any) -> QuantizationConfig:
    if config is None:
        return QuantizationConfig()
    if isinstance(config, dict):
        return QuantizationConfig.from_dict(config)
    if not isinstance(config, QuantizationConfig):
        raise InvalidTypeError(f"`config` must be a QuantizationConfig or a dict, got "
                               f"{type(config).__name__}.")
    return config


def _prepare(model: nn.Module, example_inputs: Any, config: Any, is_qat: bool) -> GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    from compressor.quantization.quantizer import OrtQuantizer

    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    config = _check_config(config)
    graph = capture(model, example_inputs, training=is_qat,
                    expand_attention_ops=config.quantize_matmul)
    quantizer = OrtQuantizer(config, is_qat=is_qat)
    prepared = (prepare_qat_pt2e if is_qat else prepare_pt2e)(graph, quantizer)
    if not quantizer.annotated:
        raise ConfigError(
            f"Nothing to quantize in {type(model).__name__}: no convolution or linear layer was "
            "annotated" + (f" (kept in float: {', '.join(quantizer.kept_float)})"
                           if quantizer.kept_float else "") + ". Check `keep_float`.")
    unmatched = [p for p in config.keep_float if p not in ("@first", "@last")
                 and not any(matches(p, layer) for layer in quantizer.kept_float)]
    if unmatched:
        raise ConfigError(
            f"`keep_float` patterns {unmatched} match no convolution or linear layer. Layers: "
            f"{', '.join(quantizer.annotated + quantizer.kept_float)}.")
    prepared.meta[INFO_KEY] = QuantizationInfo("qat" if is_qat else "ptq", config,
                                               list(quantizer.annotated),
                                               list(quantizer.kept_float))
    route_train_eval(prepared, set_qat_training)
    mark_training(prepared, is_qat)  # captured in this mode
    return prepared


def prepare_qat(model: nn.Module, example_inputs: Any,
                config: QuantizationConfig | dict[str, Any] | None = None) -> GraphModule:
    """Capture ``model`` (train mode, dynamic batch) and insert fake quantization for QAT.

    The returned graph module shares its parameters and batch-norm buffers with ``model`` (the
    same tensor objects), so an optimizer built over ``model.parameters()`` keeps working, and
    training the prepared model updates ``model``'s weights (pass ``copy.deepcopy(model)`` to
    keep the float model). Batch norm keeps updating its statistics until
    :func:`~compressor.quantization.freeze_batch_norm`; observers and fake quantization are on.
    ``prepared.train()`` / ``.eval()`` switch batch norm and dropout in the graph (the
    ``.training`` flags alone do not: after setting them directly, call
    :func:`~compressor.quantization.set_qat_training`).

    Args:
        model: The float model.
        example_inputs: A tensor or tuple of tensors; a batch of 1 is repeated to 2.
        config: Quantizer settings (a :class:`QuantizationConfig` or a dict of its fields).

    Raises:
        CaptureError: ``torch.export`` cannot capture the model.
        ConfigError: nothing to quantize, or a ``keep_float`` pattern matches no layer.
    """
    return _prepare(model, example_inputs, config, is_qat=True)


def prepare_ptq(model: nn.Module, example_inputs: Any,
                config: QuantizationConfig | dict[str, Any] | None = None) -> GraphModule:
    """Capture ``model`` (eval mode, dynamic batch, batch norm folded) and insert observers for
    post-training calibration with :func:`~compressor.quantization.calibrate`.

    ``model`` is left unchanged (batch norm is folded into new weight tensors). Same arguments
    and errors as :func:`prepare_qat`.
    """
    return _prepare(model, example_inputs, config, is_qat=False)
