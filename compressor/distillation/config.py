"""What to distil and how strongly: the validated settings shared by ``Distiller`` and the
``Distillation`` callback.

The combined training loss is::

    loss = (1 - alpha) * task_loss + alpha * kd_loss
           + feature_weight * feature_loss + attention_weight * attention_loss
           + sum(custom terms)

``alpha`` mixes only the soft-target (logit) term with the task loss, as in Hinton et al.;
feature hints, attention transfer and custom terms are added with their own weights.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from torch import Tensor, nn

from compressor.distillation.teacher import TeacherPrecision
from compressor.errors import ConfigError, InvalidTypeError, closest_names
from compressor.utils.config import Config

__all__ = ["DistillationConfig", "DistillationTerm", "FeatureLoss", "RESERVED_TERMS", "SELF_TEACHER"]

#: Names of the built-in loss terms (custom terms may not reuse them).
RESERVED_TERMS = ("loss", "task_loss", "kd_loss", "feature_loss", "attention_loss")

#: The ``teacher`` value that distils from a frozen copy of the uncompressed student.
SELF_TEACHER = _SELF = "self"


class FeatureLoss(str, enum.Enum):
    """Distance between a (projected) student feature and the teacher feature."""

    MSE = "mse"
    COSINE = "cosine"


@runtime_checkable
class DistillationTerm(Protocol):
    """A custom distillation loss: ``term(student_output, teacher_output, inputs) -> scalar``.

    ``student_output`` and ``teacher_output`` are whatever the two models returned for the same
    batch (the teacher's under ``no_grad``); ``inputs`` is the tuple of positional arguments the
    student was called with. The returned scalar tensor is added to the loss as is (scale it
    inside the term).
    """

    def __call__(self, student_output: Any, teacher_output: Any,
                 inputs: tuple[Any, ...]) -> Tensor: ...


class DistillationConfig(Config):
    """Everything about distillation: the teacher, the terms of the combined loss (see the
    module docstring) and their weights. Used by :class:`~compressor.distillation.Distiller`,
    the ``Distillation`` callback and recipe ``distillation`` sections (``Distiller`` receives
    its teacher module directly and ignores ``teacher`` and ``student``)."""

    teacher: SkipJsonSchema[nn.Module] | str = _SELF
    """``"self"`` (a frozen copy of the student taken before any compression), an
    ``nn.Module``, or the path of a Lightning checkpoint (weights under a prefix such as
    ``"model."``) or of a plain state dict of the student's architecture."""
    temperature: Annotated[float, Field(gt=0.0)] = 4.0
    """Softmax temperature of the soft targets (> 0, typically 1-8); the KD term is scaled by
    ``temperature**2`` so its gradients keep their size when the temperature changes."""
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """Weight of the KD term in ``[0, 1]``; the task loss gets ``1 - alpha``."""
    features: dict[str, str] = Field(default_factory=dict)
    """Feature hints ``{student_layer: teacher_layer}`` (dotted submodule names). A learned
    adapter maps the student feature to the teacher's shape when they differ."""
    feature_loss: FeatureLoss = FeatureLoss.MSE
    """``"mse"`` or ``"cosine"`` (``1 - cosine similarity`` per sample)."""
    feature_weight: Annotated[float, Field(ge=0.0)] = 1.0
    """Weight of the summed feature-hint losses (>= 0)."""
    attention: dict[str, str] = Field(default_factory=dict)
    """Attention-transfer pairs ``{student_layer: teacher_layer}``, or a list of layer names
    present in both models. Channels may differ; spatial sizes must match."""
    attention_weight: Annotated[float, Field(ge=0.0)] = 1.0
    """Weight of the summed attention-transfer losses (>= 0)."""
    losses: SkipJsonSchema[dict[str, Callable[..., Tensor]]] = Field(default_factory=dict)
    """Custom terms ``{name: callable}`` (see :class:`DistillationTerm`), logged as
    ``distill/<name>``."""
    teacher_precision: TeacherPrecision = TeacherPrecision.FP32
    """``"fp32"``, ``"bf16"`` (bfloat16 autocast: about half the teacher's cost on CPUs with
    AVX512-BF16/AMX and recent GPUs) or ``"auto"`` (bf16 only where the device supports it
    natively)."""
    student: str | None = None
    """Attribute path of the student in the LightningModule (default: its only child with
    parameters)."""

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher(cls, value: Any) -> Any:
        return _teacher_source(value)

    @field_validator("features", "attention", mode="before")
    @classmethod
    def _pairs(cls, value: Any, info: ValidationInfo) -> dict[str, str]:
        return _layer_pairs(str(info.field_name), value)

    @field_validator("losses", mode="before")
    @classmethod
    def _terms(cls, value: Any) -> dict[str, Callable[..., Tensor]]:
        return _custom_terms(value)

    @property
    def student_layers(self) -> list[str]:
        """Student layers whose outputs must be captured (feature and attention pairs)."""
        return list(dict.fromkeys([*self.features, *self.attention]))

    @property
    def teacher_layers(self) -> list[str]:
        """Teacher layers whose outputs must be captured."""
        return list(dict.fromkeys([*self.features.values(), *self.attention.values()]))


def _teacher_source(teacher: object) -> nn.Module | str:
    """``teacher`` as a module, ``"self"`` or the path of an existing file."""
    if isinstance(teacher, nn.Module):
        return teacher
    if isinstance(teacher, (str, os.PathLike)):
        text = os.fspath(teacher)
        if text.lower() == _SELF:
            return _SELF
        if Path(text).is_file():
            return text
        close = closest_names(text, [_SELF])
        guess = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"`teacher` {text!r} is neither \"self\" nor an existing checkpoint file.{guess} "
            "Pass an nn.Module, \"self\" (a frozen copy of the student taken before "
            "compression) or the path of a Lightning checkpoint / state dict of the student's "
            "architecture.")
    raise InvalidTypeError(
        f"`teacher` must be an nn.Module, \"self\" or a checkpoint path, got {teacher!r} "
        f"({type(teacher).__name__}).")


def _layer_pairs(name: str, value: object) -> dict[str, str]:
    """``{student: teacher}`` from a mapping, a list of shared names or ``None``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = dict(value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pairs = {layer: layer for layer in value}
    else:
        raise InvalidTypeError(
            f"`{name}` must map student layer names to teacher layer names, e.g. "
            f"{{'layer3': 'layer3'}}, or list names present in both models; got {value!r}.")
    for student, teacher in pairs.items():
        for layer in (student, teacher):
            if not isinstance(layer, str) or not layer:
                raise InvalidTypeError(
                    f"`{name}` must hold non-empty dotted layer names (strings), got "
                    f"{student!r}: {teacher!r}. Use names from model.named_modules().")
    return pairs


def _custom_terms(value: object) -> dict[str, Callable[..., Tensor]]:
    """Validate ``{name: callable}`` custom distillation terms."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidTypeError(
            f"`losses` must be a mapping {{name: callable}}, got {value!r} "
            f"({type(value).__name__}). The name is used for logging (distill/<name>).")
    for name, term in value.items():
        if not isinstance(name, str) or not name or name in RESERVED_TERMS:
            raise ConfigError(
                f"`losses` key {name!r} is not a usable name: use a non-empty string other than "
                f"{', '.join(RESERVED_TERMS)}.")
        if not callable(term):
            raise InvalidTypeError(
                f"`losses[{name!r}]` must be callable as term(student_output, teacher_output, "
                f"inputs) -> scalar tensor, got {term!r} ({type(term).__name__}).")
    return dict(value)
