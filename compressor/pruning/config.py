"""``PruningConfig``: what to prune, how much, by which criterion, allocation and schedule."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import Field, StrictInt, field_validator, model_validator

from compressor.errors import ConfigError, InvalidTypeError
from compressor.pruning.budget import Budget
from compressor.pruning.criteria import CriterionName
from compressor.pruning.schedules import Schedule, ScheduleKind, make_schedule
from compressor.utils.config import Config, Fraction, NonNegativeInt, PositiveInt, StrictBool

__all__ = ["Granularity", "Allocation", "PruningConfig", "AUTO_NOMINAL_TARGET"]

#: The schedule target of ``allocation="auto"``: progress towards the chosen ratios.
AUTO_NOMINAL_TARGET = 0.5


class Granularity(str, enum.Enum):
    """What one pruning decision removes."""

    UNSTRUCTURED = "unstructured"
    NM = "n:m"
    CHANNEL = "channel"
    HEAD = "head"
    BLOCK = "block"

    @property
    def structured(self) -> bool:
        """Whether the result can be compacted physically."""
        return self in (Granularity.CHANNEL, Granularity.HEAD, Granularity.BLOCK)


class Allocation(str, enum.Enum):
    """``uniform``: every layer/group gets the same sparsity; ``global``: one ranking across
    layers/groups (each keeps at least one channel); ``auto``: per-group ratios chosen to meet
    a ``budget`` (latency in ONNX Runtime, MACs or parameters) at the least predicted loss,
    see :mod:`compressor.automatic`."""

    UNIFORM = "uniform"
    GLOBAL = "global"
    AUTO = "auto"


class PruningConfig(Config):
    """Everything about pruning one model: what, how much, by which criterion, on which
    schedule (used by :class:`~compressor.pruning.Pruner`, the ``Pruning`` callback and recipe
    ``pruning`` sections; the :class:`Pruner` itself ignores the schedule fields).

    When to prune is given in epochs (``start_epoch``/``end_epoch``) or in optimizer steps
    (``start_step``/``end_step``), never both.
    """

    granularity: Granularity = Granularity.UNSTRUCTURED
    """``unstructured``, ``n:m``, ``channel``, ``head`` or ``block``."""
    sparsity: Fraction | None = None
    """Target fraction in ``[0, 1)`` of weights (unstructured), channels, heads or residual
    blocks to remove. For ``n:m`` it is ``1 - n/m`` (leave it unset)."""
    criterion: CriterionName = CriterionName.L1
    """``l1``, ``l2``, ``taylor``, ``obd``, ``bn_scale`` or ``random``."""
    schedule: ScheduleKind = ScheduleKind.ONE_SHOT
    """``one-shot``, ``linear``, ``cubic``, ``exponential`` or ``iterative``."""
    start_epoch: NonNegativeInt | None = None
    """First pruning epoch (default 0 when no step is given)."""
    end_epoch: NonNegativeInt | None = None
    """Epoch at whose start the target is reached (default ``start_epoch``)."""
    start_step: NonNegativeInt | None = None
    """First pruning optimizer step (instead of epochs)."""
    end_step: NonNegativeInt | None = None
    """Optimizer step where the target is reached."""
    frequency: PositiveInt = 1
    """Epochs or steps between mask updates."""
    increments: PositiveInt | None = None
    """Number of equal increments of the ``iterative`` schedule."""
    allocation: Allocation = Allocation.UNIFORM
    """``uniform`` (every layer or group gets the same sparsity), ``global`` (one ranking) or
    ``auto`` (per-group ratios chosen for ``budget``; channel granularity)."""
    budget: Budget | None = None
    """What ``allocation="auto"`` must reach, e.g. ``{"latency_speedup": 3.0}``,
    ``{"macs": 0.4}`` or ``{"params": 0.3}`` (see :class:`~compressor.pruning.budget.Budget`)."""
    overrides: dict[str, Fraction] = Field(default_factory=dict)
    """Per-layer (unstructured) or per-group (channel, head: matched against the modules
    producing the channels) sparsity by name pattern (see :mod:`compressor.utils.names`), e.g.
    ``{"layers.2.*": 0.7}``."""
    ignore: tuple[str, ...] = ()
    """Module-name patterns left untouched (for channel/head granularity, every group that
    touches an ignored module)."""
    protect_first_last: StrictBool = True
    """Leave the first and the last prunable layer (by registration order: usually the stem
    convolution and the classifier) unpruned in ``unstructured`` and ``n:m`` modes. Channel
    pruning never removes the model's input channels or output logits anyway."""
    n: PositiveInt = 2
    """Kept weights per group of ``m`` (``n:m`` only)."""
    m: Annotated[StrictInt, Field(ge=2)] = 4
    """Group size along the input dimension (``n:m`` only)."""
    compact: StrictBool = True
    """Physically remove channels, heads or blocks when the schedule ends (structured only)."""
    calibration_batches: NonNegativeInt = 8
    """Training batches scored before a data-driven criterion (taylor, obd) prunes before any
    training step has produced gradients."""
    student: str | None = None
    """Attribute path of the model to prune in the LightningModule (default: its only child
    with parameters)."""
    log_per_layer: StrictBool = True
    """Also log the measured sparsity of every layer or group."""
    seed: NonNegativeInt = 0
    """Seed of the ``random`` criterion."""

    @field_validator("ignore", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise InvalidTypeError(f"`ignore` must be a list of module name patterns, got "
                                   f"{value!r}; write [{value!r}].")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PruningConfig:
        granularity = self.granularity
        if granularity is Granularity.NM:
            _check_nm(self)
        elif self.allocation is Allocation.AUTO or self.budget is not None:
            _check_auto(self)
        elif self.sparsity is None:
            raise ConfigError("`sparsity` is required (a fraction in [0, 1), e.g. 0.5 to "
                              "remove half).")
        if self.criterion is CriterionName.BN_SCALE and not granularity.structured:
            raise ConfigError("criterion 'bn_scale' ranks channels by their normalisation scale; "
                              "use it with granularity 'channel', 'head' or 'block'.")
        epochs = [n for n in ("start_epoch", "end_epoch") if getattr(self, n) is not None]
        steps = [n for n in ("start_step", "end_step") if getattr(self, n) is not None]
        if epochs and steps:
            raise ConfigError("Give the schedule in epochs (start_epoch, end_epoch) or in steps "
                              "(start_step, end_step), not both.")
        self.make_schedule()  # raises on an impossible schedule
        return self

    @property
    def target(self) -> float:
        """The final sparsity (``1 - n/m`` for n:m; for ``auto`` a nominal 0.5 that the schedule
        ramps to, each group reaching its chosen ratio with it)."""
        if self.granularity is Granularity.NM:
            return 1.0 - self.n / self.m
        if self.allocation is Allocation.AUTO:
            return AUTO_NOMINAL_TARGET
        return float(self.sparsity or 0.0)

    @property
    def unit(self) -> str:
        """``"step"`` when the schedule is given in optimizer steps, else ``"epoch"``."""
        return "step" if self.start_step is not None or self.end_step is not None else "epoch"

    def make_schedule(self) -> Schedule:
        """The sparsity schedule in :attr:`unit` time steps."""
        by_step = self.unit == "step"
        start = (self.start_step if by_step else self.start_epoch) or 0
        end = self.end_step if by_step else self.end_epoch
        return make_schedule(self.schedule, self.target, start, end, self.frequency,
                             self.increments)


def _check_auto(config: PruningConfig) -> None:
    if config.allocation is not Allocation.AUTO:
        raise ConfigError("A `budget` is met by automatic allocation: add allocation='auto'.")
    if config.budget is None:
        raise ConfigError("allocation='auto' needs a `budget`, e.g. "
                          "budget={'latency_speedup': 3.0}, {'macs': 0.4} or {'params': 0.3}.")
    if config.granularity is not Granularity.CHANNEL:
        raise ConfigError(f"allocation='auto' chooses per-group channel ratios; use "
                          f"granularity='channel' (got {config.granularity.value!r}).")
    if config.sparsity is not None:
        raise ConfigError("With allocation='auto' the budget decides how much is removed; leave "
                          "`sparsity` unset.")


def _check_nm(config: PruningConfig) -> None:
    if config.n >= config.m:
        raise ConfigError(f"N:M sparsity needs n < m, got n={config.n}, m={config.m} "
                          "(e.g. n=2, m=4 keeps 2 of every 4 weights).")
    nm_sparsity = 1.0 - config.n / config.m
    if config.sparsity is not None and abs(config.sparsity - nm_sparsity) > 1e-9:
        raise ConfigError(f"`sparsity` is fixed by n:m ({config.n}:{config.m} -> "
                          f"{nm_sparsity:g}); got {config.sparsity}. Leave it unset.")
    if config.overrides:
        raise ConfigError("`overrides` do not apply to n:m sparsity (every layer gets n:m); "
                          "use `ignore` to leave layers dense.")
    if config.schedule is not ScheduleKind.ONE_SHOT:
        raise ConfigError("n:m sparsity is applied in one shot; use schedule='one-shot'.")
