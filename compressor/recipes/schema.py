"""The recipe schema: one YAML file describes the model, the data and the training run.

Unknown keys are rejected everywhere, with the closest known key (a typo never silently does
nothing); model and data options are checked against the constructor they are passed to. The
compression sections are the typed configs of the parts (``PruningConfig``,
``DistillationConfig``, ``QuantizationConfig``, ``ExportConfig``): a recipe is validated once,
when it loads, and its callbacks are built from those configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compressor.distillation.config import DistillationConfig
from compressor.errors import ConfigError, UnknownNameError
from compressor.export.config import ExportConfig
from compressor.pruning.config import PruningConfig
from compressor.quantization.config import QuantizationConfig
from compressor.training.optim import OptimizerConfig, SchedulerConfig
from compressor.utils.checks import check_kwargs
from compressor.utils.config import Config, NonNegativeInt, PositiveInt, StrictBool, problem_line

__all__ = ["ModelSpec", "DataSpec", "TrainSpec", "ExportSpec", "Recipe", "format_validation_error",
           "build_callbacks"]


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


class TrainSpec(Config):
    """How long and how to train."""

    epochs: PositiveInt = 10
    """Training epochs of this stage."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """The optimizer and its settings."""
    scheduler: SchedulerConfig = SchedulerConfig(warmup_epochs=0.5)
    """The learning-rate schedule."""
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Label smoothing of the cross-entropy loss."""
    accumulate_grad_batches: PositiveInt = 1
    """Batches whose gradients are accumulated per optimizer step."""
    limit_train_batches: Annotated[int | float, Field(gt=0)] | None = None
    """Training batches per epoch (an int) or fraction of them (a float); all by default."""
    limit_val_batches: Annotated[int | float, Field(ge=0)] | None = None
    """Validation batches per epoch (an int) or fraction of them (a float); all by default."""


class ExportSpec(ExportConfig):
    """Export the final model to ONNX (int8 after QAT), verify it, measure its accuracy in ONNX
    Runtime and, with ``compare_dense``, time it side by side with the dense fp32 model."""

    latency_repeats: PositiveInt = 30
    """Interleaved timed runs per model and batch size."""
    compare_dense: StrictBool = True
    """Also export the dense fp32 model (before compression) and time both side by side."""


class Recipe(Config):
    """A complete run: model, data, training, compression and where to write the results.

    ``baseline`` (optional) trains the dense model first; ``train`` is then the compression
    fit, with the callbacks of the ``pruning``, ``distillation`` and ``quantization`` sections
    (each section is the config of the callback of the same name).
    """

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Name of the run (its default output folder is ``runs/<name>``)."""
    description: str = ""
    """One line shown by ``compressor recipes``, then any detail."""
    seed: NonNegativeInt = 0
    """Seed of everything random in the run."""
    model: ModelSpec = ModelSpec()
    """The model to train and compress."""
    data: DataSpec = DataSpec()
    """The data set."""
    baseline: TrainSpec | None = None
    """Train the dense model first (a separate fit)."""
    train: TrainSpec = TrainSpec()
    """The (compression) fit."""
    pruning: list[PruningConfig] = Field(default_factory=list)
    """Pruning callbacks, one entry each (see ``PruningConfig``)."""
    distillation: DistillationConfig | None = None
    """Distillation (see ``DistillationConfig``)."""
    quantization: QuantizationConfig | None = None
    """Quantization-aware training (see ``QuantizationConfig``)."""
    export: ExportSpec | None = None
    """Export, verify and time the final model in ONNX Runtime."""

    @property
    def compresses(self) -> bool:
        """Whether the ``train`` fit uses compression callbacks."""
        return bool(self.pruning or self.distillation or self.quantization)


def format_validation_error(error: ValidationError, source: str) -> ConfigError:
    """Turn a pydantic error into a ``ConfigError`` listing each bad key path and value."""
    lines = [f"  - {problem_line(item, Recipe)}" for item in error.errors()]
    return ConfigError(f"Invalid recipe {source}:\n" + "\n".join(lines))


def build_callbacks(recipe: Recipe) -> list[Any]:
    """The compression callbacks of a recipe's ``train`` fit, built from its validated
    sections."""
    from compressor.callbacks.distillation import Distillation
    from compressor.callbacks.pruning import Pruning
    from compressor.callbacks.quantization import QuantizationAwareTraining

    callbacks: list[Any] = [Pruning(config=section) for section in recipe.pruning]
    if recipe.distillation is not None:
        callbacks.append(Distillation(config=recipe.distillation))
    if recipe.quantization is not None:
        callbacks.append(QuantizationAwareTraining(config=recipe.quantization))
    return callbacks
