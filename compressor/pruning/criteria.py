"""Importance criteria: element-wise scores of parameters (higher = more important).

Every criterion implements one small protocol (:class:`Criterion`): optional accumulation of
gradient statistics after each backward pass, and element-wise ``scores`` for a tensor. Channel,
head and block granularities sum the element scores over each unit's slices.

Families: magnitude (``l1``, ``l2``), sensitivity (``taylor``: first-order |w * dL/dw|
accumulated over steps), information (``obd``: diagonal-Fisher saliency ``0.5 * F_ii * w^2``
with ``F_ii`` the mean squared gradient), network slimming (``bn_scale``: |gamma| of the
normalisation layers) and ``random`` as a baseline.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.utils.checks import check_enum

__all__ = ["CriterionName", "Criterion", "Magnitude", "Taylor", "OBD", "BNScale", "Random",
           "make_criterion"]


class CriterionName(str, enum.Enum):
    """Names accepted by :func:`make_criterion`."""

    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"
    OBD = "obd"
    BN_SCALE = "bn_scale"
    RANDOM = "random"


@runtime_checkable
class Criterion(Protocol):
    """Scores parameters element-wise."""

    name: str
    needs_gradients: bool

    def accumulate(self, parameters: Mapping[str, torch.Tensor]) -> None:
        """Record statistics from the current gradients (called after each backward)."""

    def scores(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        """Element-wise importance of ``parameter`` (same shape, non-negative)."""

    def reset(self) -> None:
        """Forget accumulated statistics."""

    def state_dict(self) -> dict[str, Any]:
        """Accumulated statistics, for checkpoints."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class _Stateless:
    needs_gradients = False

    def accumulate(self, parameters: Mapping[str, torch.Tensor]) -> None:
        return None

    def reset(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


class Magnitude(_Stateless):
    """``|w|`` (L1) or ``w^2`` (L2; channel scores become squared L2 norms)."""

    def __init__(self, power: int = 1) -> None:
        self.power = power
        self.name = "l1" if power == 1 else "l2"

    def scores(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.detach().abs().pow(self.power)


class BNScale(_Stateless):
    """|gamma| of normalisation layers (network slimming); other tensors score 0 so that only
    the norm scales decide which channels go."""

    name = "bn_scale"

    def __init__(self, norm_weights: set[str] | None = None) -> None:
        self.norm_weights = norm_weights or set()

    def scores(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        if name in self.norm_weights:
            return parameter.detach().abs()
        return torch.zeros_like(parameter, dtype=torch.float32)


class Random(_Stateless):
    """Uniform random scores from a seeded generator (a baseline)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._draws = 0

    def scores(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(
            self.seed * 1_000_003 + zlib.crc32(name.encode()) + self._draws)
        self._draws += 1
        return torch.rand(parameter.shape, generator=generator).to(parameter.device)

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self._draws}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._draws = int(state.get("draws", 0))


class _GradientStatistic:
    """Accumulates a per-element statistic of (weight, gradient) over backward passes."""

    needs_gradients = True
    name = ""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def statistic(self, parameter: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def accumulate(self, parameters: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, parameter in parameters.items():
                if parameter.grad is None:
                    continue
                value = self.statistic(parameter.detach(), parameter.grad.detach())
                if name in self.sums and self.sums[name].shape == value.shape:
                    self.sums[name] += value
                else:
                    self.sums[name] = value.clone()
        self.count += 1

    def mean(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        if self.count == 0 or name not in self.sums:
            raise ConfigError(
                f"Criterion {self.name!r} scores from gradients, but none were accumulated for "
                f"{name!r}. Call `accumulate()` after backward for a few batches before pruning "
                "(the Pruning callback does this; for pruning before training it uses "
                "`calibration_batches`).")
        return self.sums[name] / self.count

    def reset(self) -> None:
        self.sums.clear()
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: v.clone() for k, v in state.get("sums", {}).items()}
        self.count = int(state.get("count", 0))


class Taylor(_GradientStatistic):
    """First-order Taylor importance ``|w * dL/dw|``, averaged over the accumulated steps."""

    name = "taylor"

    def statistic(self, parameter: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        return (parameter * gradient).abs()

    def scores(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        return self.mean(name, parameter)


class OBD(_GradientStatistic):
    """Optimal-brain-damage saliency ``0.5 * F_ii * w^2`` with the diagonal Fisher ``F_ii``
    estimated by the mean squared gradient."""

    name = "obd"

    def statistic(self, parameter: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.square()

    def scores(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.mean(name, parameter) * parameter.detach().square()


def norm_weight_names(model: nn.Module) -> set[str]:
    """Parameter names of the normalisation scales in ``model`` (what ``bn_scale`` ranks)."""
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)  # noqa: SLF001
    return {f"{n}.weight" if n else "weight" for n, m in model.named_modules()
            if isinstance(m, norms)}


def make_criterion(name: CriterionName | str, seed: int = 0,
                   norm_weights: set[str] | None = None) -> Criterion:
    """Create a criterion by name (``l1``, ``l2``, ``taylor``, ``obd``, ``bn_scale``, ``random``)."""
    kind = check_enum("criterion", name, CriterionName)
    if kind is CriterionName.L1:
        return Magnitude(1)
    if kind is CriterionName.L2:
        return Magnitude(2)
    if kind is CriterionName.TAYLOR:
        return Taylor()
    if kind is CriterionName.OBD:
        return OBD()
    if kind is CriterionName.BN_SCALE:
        return BNScale(norm_weights)
    return Random(seed)
