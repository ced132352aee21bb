"""Switches a training loop (or a callback) needs on a prepared model: batch-norm freezing,
observers and fake quantization on/off, and train/eval mode that keeps them consistent."""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from compressor.quantization.info import quantization_info
from compressor.quantization.modes import set_training

__all__ = ["freeze_batch_norm", "set_observers", "set_fake_quant", "set_qat_training"]

_aten = torch.ops.aten
# ATen batch-norm ops and the position of their ``training`` argument.
_BATCH_NORM_TRAINING_ARG = {
    _aten.batch_norm.default: 5,
    _aten._native_batch_norm_legit.default: 5,
    _aten.cudnn_batch_norm.default: 5,
}


def _set_batch_norm_training(model: GraphModule, training: bool) -> int:
    changed = 0
    for node in model.graph.nodes:
        index = _BATCH_NORM_TRAINING_ARG.get(node.target)
        if node.op == "call_function" and index is not None and len(node.args) > index \
                and node.args[index] is not training:
            args = list(node.args)
            args[index] = training
            node.args = tuple(args)
            changed += 1
    if changed:
        model.recompile()
    return changed


def freeze_batch_norm(model: GraphModule, frozen: bool = True) -> None:
    """Freeze (or unfreeze) the batch-norm statistics of a QAT-prepared model.

    Frozen batch norm normalises with its running statistics and stops updating them, so the
    folded weights QAT sees match those of the converted model. The state survives
    :func:`set_qat_training` (``prepared.train()``), which otherwise restores batch statistics.

    Raises:
        ConfigError: ``model`` was not prepared by ``prepare_qat`` / ``prepare_ptq``.
    """
    info = quantization_info(model)
    info.batch_norm_frozen = frozen
    if getattr(model, "_exported_training", True):
        _set_batch_norm_training(model, not frozen)


def set_qat_training(model: GraphModule, training: bool) -> GraphModule:
    """Put a prepared model in train or eval mode (batch norm, dropout), keeping batch norm
    frozen in train mode when :func:`freeze_batch_norm` was called."""
    info = quantization_info(model)
    set_training(model, training)
    if training and info.batch_norm_frozen:
        _set_batch_norm_training(model, False)
    return model


def _fake_quantizers(model: GraphModule) -> list[torch.nn.Module]:
    from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

    return [m for m in model.modules() if isinstance(m, (FakeQuantizeBase, ObserverBase))]


def _switch_fake_quantizers(model: GraphModule, method: str, enabled: bool) -> int:
    """Call ``method(enabled)`` on every fake quantizer that has it; returns how many."""
    quantization_info(model)
    switches = [getattr(m, method) for m in _fake_quantizers(model) if hasattr(m, method)]
    for switch in switches:
        switch(enabled)
    return len(switches)


def set_observers(model: GraphModule, enabled: bool) -> int:
    """Turn range observation of every fake quantizer on or off (e.g. off during validation
    and after an observer-freeze epoch); returns how many were switched.

    PTQ observers always observe while the model runs; calibrate only on calibration data.
    """
    return _switch_fake_quantizers(model, "enable_observer", enabled)


def set_fake_quant(model: GraphModule, enabled: bool) -> int:
    """Turn fake quantization of a QAT-prepared model on or off (off: the model computes in
    float while observers may still record ranges); returns how many were switched."""
    return _switch_fake_quantizers(model, "enable_fake_quant", enabled)
