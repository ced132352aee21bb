"""Learned adapters that project a student feature to the teacher feature's shape for a hint
loss. They are trained with the student but live outside it: never part of the exported model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError

__all__ = ["AdapterSpec", "adapter_spec", "build_adapter"]

_KINDS = ("linear", "conv2d")


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter's kind (``"linear"`` on the last dimension, ``"conv2d"`` 1x1 on channels) and
    its input/output widths. Stored in checkpoints so adapters can be rebuilt on resume."""

    kind: str
    in_features: int
    out_features: int

    def to_dict(self) -> dict[str, Any]:
        """A plain dictionary (for state dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterSpec:
        """Inverse of :meth:`to_dict`."""
        spec = cls(str(data["kind"]), int(data["in_features"]), int(data["out_features"]))
        if spec.kind not in _KINDS:
            raise ConfigError(f"Unknown adapter kind {spec.kind!r} in a saved state; valid kinds: "
                              f"{', '.join(_KINDS)}.")
        return spec


def adapter_spec(student_shape: torch.Size, teacher_shape: torch.Size,
                 pair: str) -> AdapterSpec | None:
    """The adapter mapping a student feature of ``student_shape`` to ``teacher_shape``.

    ``None`` when the shapes are equal. Vectors ``(N, D)`` and token sequences ``(N, L, D)``
    get a linear layer on ``D``; feature maps ``(N, C, H, W)`` a 1x1 convolution on ``C``.

    Raises:
        ConfigError: no adapter can bridge the shapes (``pair`` names the layers).
    """
    student, teacher = tuple(student_shape), tuple(teacher_shape)
    if student == teacher:
        return None
    same_rank = len(student) == len(teacher)
    if same_rank and len(student) in (2, 3) and student[:-1] == teacher[:-1]:
        return AdapterSpec("linear", student[-1], teacher[-1])
    if same_rank and len(student) == 4 and student[0] == teacher[0] and student[2:] == teacher[2:]:
        return AdapterSpec("conv2d", student[1], teacher[1])
    raise ConfigError(
        f"Feature hint {pair}: no adapter can map the student feature {student} to the "
        f"teacher feature {teacher}. Adapters change only the last dimension of "
        "(N, D) / (N, L, D) features or the channels of (N, C, H, W) maps; pair layers whose "
        "other dimensions (batch, spatial size) match.")


def build_adapter(spec: AdapterSpec, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> nn.Module:
    """A freshly initialised adapter for ``spec``.

    Initialisation uses ``generator`` (when given) so that every process of a distributed run
    builds identical adapters without communication.
    """
    if spec.kind == "linear":
        adapter: nn.Module = nn.Linear(spec.in_features, spec.out_features, device=device,
                                       dtype=dtype)
    else:
        adapter = nn.Conv2d(spec.in_features, spec.out_features, kernel_size=1, device=device,
                            dtype=dtype)
    bound = 1.0 / math.sqrt(spec.in_features)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.uniform_(-bound, bound, generator=generator)
    return adapter
