"""Rebuilding a trained model from a checkpoint written by ``compressor run`` / ``train``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel
from torch import nn

from compressor.callbacks.run_info import RUN_INFO_KEY
from compressor.errors import ConfigError
from compressor.graph.compact import replay_history
from compressor.models.registry import create_model
from compressor.recipes.schema import ModelSpec
from compressor.utils.config import config_error
from compressor.utils.io import load_checkpoint

__all__ = ["RestoredModel", "restore_model", "run_info", "RUN_INFO_KEY"]

M = TypeVar("M", bound=BaseModel)


@dataclass
class RestoredModel:
    """A model rebuilt from a checkpoint, with the recipe and the input shape it was trained on."""

    model: nn.Module
    recipe: dict[str, Any]
    """The recipe of the run, as embedded in the checkpoint."""
    model_spec: ModelSpec
    input_shape: tuple[int, ...]
    num_classes: int

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        """Random inputs of the training input shape (for export and benchmarks)."""
        return (torch.randn(batch, *self.input_shape),)


def run_info(checkpoint: dict) -> dict:
    """The run information embedded in a checkpoint, or a ``ConfigError`` explaining its absence."""
    info = checkpoint.get(RUN_INFO_KEY)
    if not isinstance(info, dict):
        raise ConfigError("This checkpoint was not written by `compressor run` / `compressor train`, "
                          "so the model cannot be rebuilt from it alone. Export from Python instead: "
                          "`compressor.export_onnx(model, path, example_inputs)` or the ExportONNX "
                          "callback.")
    return info


def saved_history(checkpoint: dict) -> list[dict]:
    """The compaction history stored by the compressing callbacks of a checkpoint (the longest
    one: histories are cumulative)."""
    histories = [state.get("history") for state in checkpoint.get("callbacks", {}).values()
                 if isinstance(state, dict) and state.get("compacted")]
    return max((h for h in histories if h), key=len, default=[])


def _quantization_state(checkpoint: dict) -> dict | None:
    """The QAT callback state of a checkpoint taken during QAT, if any."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("QuantizationAwareTraining") and isinstance(state, dict) \
                and state.get("prepared"):
            return state
    return None


def restore_model(path: str | Path) -> RestoredModel:
    """Rebuild the model of a ``compressor`` checkpoint and load its weights (eval mode).

    Compactions are replayed first; a checkpoint taken during QAT is prepared again, loaded and
    converted, so the result is the int8 model.
    """
    checkpoint = load_checkpoint(path)
    info = run_info(checkpoint)
    recipe = dict(info["recipe"])
    # Only what rebuilds the model is validated: the rest of the run (a teacher file, export
    # settings) need not exist or be current where the checkpoint is opened.
    spec = _section(ModelSpec, recipe.get("model", {}), path, "model")
    input_shape = tuple(int(d) for d in info["input_shape"])
    model = create_model(spec.name, num_classes=int(info["num_classes"]),
                         in_channels=input_shape[0], image_size=input_shape[1], **spec.options)
    replay_history(model, saved_history(checkpoint))
    state = {key.removeprefix("model."): value for key, value in checkpoint["state_dict"].items()
             if key.startswith("model.")}
    quantization = _quantization_state(checkpoint)
    if quantization is not None and quantization.get("converted"):
        raise ConfigError(f"Checkpoint {path} was saved after the int8 conversion, whose "
                          "quantization parameters live in the graph, not in the weights: "
                          "restore a checkpoint taken during training (e.g. the last epoch's).")
    if quantization is not None:
        from compressor.quantization import QuantizationConfig, convert, freeze_batch_norm, prepare_qat

        config = _section(QuantizationConfig, recipe.get("quantization") or {}, path, "quantization")
        model = prepare_qat(model, (torch.zeros(2, *input_shape),), config)
        if quantization.get("bn_frozen"):
            freeze_batch_norm(model)
        model.load_state_dict(state)
        model = convert(model)
    else:
        model.load_state_dict(state)
    return RestoredModel(model.eval(), recipe, spec, input_shape, int(info["num_classes"]))


def _section(model_type: type[M], values: Any, path: str | Path, key: str) -> M:
    """Validate one section of an embedded recipe, naming the checkpoint on failure."""
    from pydantic import ValidationError

    try:
        return model_type.model_validate(values)
    except ValidationError as error:
        raise ConfigError(f"The `{key}` section of the recipe embedded in {path} is invalid: "
                          f"{config_error(model_type, error)}") from None
