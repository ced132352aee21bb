"""The recipe schema: one YAML file describes the model, the data and the training run.

Unknown keys are rejected everywhere (a typo never silently does nothing); model and data options
are checked against the constructor they are passed to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compressor._validation import check_kwargs
from compressor.errors import CompressorError, ConfigError, UnknownNameError
from compressor.training.optim import OptimizerConfig, SchedulerConfig

__all__ = ["ModelSpec", "DataSpec", "TrainSpec", "ExportSpec", "Recipe", "format_validation_error",
           "build_callbacks"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(BaseModel):
    """``name`` of a reference model (see ``compressor.models``) plus its options, e.g.
    ``width_mult``; ``checkpoint`` optionally initialises the weights."""

    model_config = ConfigDict(extra="allow")

    name: str = "resnet20"
    checkpoint: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        from compressor.models.registry import MODELS

        key = self.name.lower()
        if key not in MODELS:
            raise UnknownNameError("model", self.name, MODELS)
        check_kwargs(f"model {key!r}", MODELS[key], self.options,
                     reserved=("num_classes", "in_channels", "image_size"))
        return self

    @property
    def options(self) -> dict[str, Any]:
        """Model-specific keyword arguments (every key other than ``name`` / ``checkpoint``)."""
        return dict(self.model_extra or {})


class DataSpec(BaseModel):
    """``name`` of a data set (``fashion-mnist``, ``digits``, ``synthetic``) plus the data
    module's options, e.g. ``batch_size``, ``subset``, ``augment``."""

    model_config = ConfigDict(extra="allow")

    name: str = "fashion-mnist"

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        from compressor.data.datamodules import DATAMODULES

        key = self.name.lower().replace("_", "-")
        if key not in DATAMODULES:
            raise UnknownNameError("data set", self.name, DATAMODULES)
        check_kwargs(f"data set {key!r}", DATAMODULES[key], self.options)
        return self

    @property
    def options(self) -> dict[str, Any]:
        """Data-module keyword arguments (every key other than ``name``)."""
        return dict(self.model_extra or {})


class TrainSpec(_Strict):
    """How long and how to train."""

    epochs: int = Field(10, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig(warmup_epochs=0.5)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    accumulate_grad_batches: int = Field(1, ge=1)
    limit_train_batches: int | float | None = Field(None, gt=0)
    limit_val_batches: int | float | None = Field(None, ge=0)


class ExportSpec(_Strict):
    """Export the final model to ONNX (int8 after QAT), verify it, measure its accuracy in ONNX
    Runtime and, with ``compare_dense``, time it side by side with the dense fp32 model."""

    batch: int = Field(32, ge=1, description="batch size timed besides batch 1")
    repeats: int = Field(30, ge=1, description="interleaved timed runs per model and batch")
    compare_dense: bool = True


class Recipe(_Strict):
    """A complete run: model, data, training, compression and where to write the results.

    ``baseline`` (optional) trains the dense model first; ``train`` is then the compression
    fit, with the callbacks of the ``pruning``, ``distillation``, ... sections (each section
    holds the keyword arguments of the callback of the same name).
    """

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(0, ge=0)
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    baseline: TrainSpec | None = None
    train: TrainSpec = TrainSpec()
    pruning: list[dict[str, Any]] = Field(default_factory=list)
    distillation: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    export: ExportSpec | None = None

    @field_validator("pruning")
    @classmethod
    def _check_pruning(cls, sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from compressor.callbacks.pruning import Pruning

        for index, section in enumerate(sections):
            _build_callback(Pruning, section, f"entry {index}")
        return sections

    @field_validator("distillation")
    @classmethod
    def _check_distillation(cls, section: dict[str, Any] | None) -> dict[str, Any] | None:
        from compressor.callbacks.distillation import Distillation

        if section is not None:
            _build_callback(Distillation, section, "")
        return section

    @field_validator("quantization")
    @classmethod
    def _check_quantization(cls, section: dict[str, Any] | None) -> dict[str, Any] | None:
        from compressor.callbacks.quantization import QuantizationAwareTraining

        if section is not None:
            _build_callback(QuantizationAwareTraining, section, "")
        return section

    @property
    def compresses(self) -> bool:
        """Whether the ``train`` fit uses compression callbacks."""
        return bool(self.pruning or self.distillation or self.quantization)


def _build_callback(callback: type, section: dict[str, Any], where: str) -> Any:
    """Construct ``callback(**section)`` so every key and value is validated at load time."""
    prefix = f"{where}: " if where else ""
    check_kwargs(f"{prefix}{callback.__name__}", callback, section)
    try:
        return callback(**section)
    except CompressorError as error:
        raise ConfigError(f"{prefix}{error}") from None


def format_validation_error(error: ValidationError, source: str) -> ConfigError:
    """Turn a pydantic error into a ``ConfigError`` listing each bad key path and value."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "recipe"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the recipe schema)"
        value = item.get("input")
        quiet = item["type"] in ("extra_forbidden", "missing", "value_error")
        shown = "" if quiet else f" (got {value!r})"
        lines.append(f"  - {location}: {message}{shown}")
    return ConfigError(f"Invalid recipe {source}:\n" + "\n".join(lines))


def build_callbacks(recipe: Recipe) -> list[Any]:
    """The compression callbacks a recipe's ``train`` fit uses."""
    from compressor.callbacks.distillation import Distillation
    from compressor.callbacks.pruning import Pruning
    from compressor.callbacks.quantization import QuantizationAwareTraining

    callbacks: list[Any] = [Pruning(**section) for section in recipe.pruning]
    if recipe.distillation is not None:
        callbacks.append(Distillation(**recipe.distillation))
    if recipe.quantization is not None:
        callbacks.append(QuantizationAwareTraining(**recipe.quantization))
    return callbacks
