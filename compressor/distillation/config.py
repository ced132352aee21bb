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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from compressor._validation import check_enum, check_float
from compressor.distillation.teacher import TeacherPrecision
from compressor.errors import ConfigError, InvalidTypeError

__all__ = ["DistillationConfig", "DistillationTerm", "FeatureLoss", "RESERVED_TERMS"]

#: Names of the built-in loss terms (custom terms may not reuse them).
RESERVED_TERMS = ("loss", "task_loss", "kd_loss", "feature_loss", "attention_loss")


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


@dataclass(frozen=True)
class DistillationConfig:
    """Validated distillation settings (see the module docstring for the combined loss).

    Args:
        temperature: Softmax temperature of the soft targets (> 0); the KD term is scaled by
            ``temperature**2`` so its gradients keep their size when the temperature changes.
        alpha: Weight of the KD term in ``[0, 1]``; the task loss gets ``1 - alpha``.
        features: Feature hints ``{student_layer: teacher_layer}`` (dotted submodule names). A
            learned adapter maps the student feature to the teacher's shape when they differ.
        feature_loss: ``"mse"`` or ``"cosine"`` (``1 - cosine similarity`` per sample).
        feature_weight: Weight of the summed feature-hint losses (>= 0).
        attention: Attention-transfer pairs ``{student_layer: teacher_layer}``, or a list of
            layer names present in both models. Channels may differ; spatial sizes must match.
        attention_weight: Weight of the summed attention-transfer losses (>= 0).
        losses: Custom terms ``{name: callable}`` (see :class:`DistillationTerm`), logged as
            ``distill/<name>``.
        teacher_precision: ``"fp32"`` (default), ``"bf16"`` or ``"auto"``: the precision of the
            teacher's forward pass (see :class:`~compressor.distillation.teacher.TeacherPrecision`).
    """

    temperature: float = 4.0
    alpha: float = 0.5
    features: Mapping[str, str] = field(default_factory=dict)
    feature_loss: FeatureLoss | str = FeatureLoss.MSE
    feature_weight: float = 1.0
    attention: Mapping[str, str] = field(default_factory=dict)  # or a list of shared names
    attention_weight: float = 1.0
    losses: Mapping[str, Callable[..., Tensor]] = field(default_factory=dict)
    teacher_precision: TeacherPrecision | str = TeacherPrecision.FP32

    def __post_init__(self) -> None:
        hint = "See DistillationConfig for the combined loss."
        set_ = object.__setattr__
        set_(self, "temperature", check_float(
            "temperature", self.temperature, 0.0, low_inclusive=False,
            hint="Typical values are 1-8; higher values soften the teacher's probabilities."))
        set_(self, "alpha", check_float(
            "alpha", self.alpha, 0.0, 1.0,
            hint="loss = (1 - alpha) * task_loss + alpha * kd_loss."))
        set_(self, "feature_weight", check_float("feature_weight", self.feature_weight, 0.0,
                                                 hint=hint))
        set_(self, "attention_weight", check_float("attention_weight", self.attention_weight,
                                                   0.0, hint=hint))
        set_(self, "feature_loss", check_enum("feature_loss", self.feature_loss, FeatureLoss))
        set_(self, "features", _layer_pairs("features", self.features))
        set_(self, "attention", _layer_pairs("attention", self.attention))
        set_(self, "losses", _custom_terms(self.losses))
        set_(self, "teacher_precision", check_enum(
            "teacher_precision", self.teacher_precision, TeacherPrecision,
            hint="\"bf16\" halves the teacher's cost on hardware with native bfloat16."))

    @property
    def student_layers(self) -> list[str]:
        """Student layers whose outputs must be captured (feature and attention pairs)."""
        return list(dict.fromkeys([*self.features, *self.attention]))

    @property
    def teacher_layers(self) -> list[str]:
        """Teacher layers whose outputs must be captured."""
        return list(dict.fromkeys([*self.features.values(), *self.attention.values()]))


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
