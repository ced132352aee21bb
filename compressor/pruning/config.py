"""``PruningConfig``: what to prune, how much, by which criterion and with which allocation."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from compressor._validation import check_enum, check_float, check_int
from compressor.errors import ConfigError, InvalidTypeError
from compressor.pruning.criteria import CriterionName

__all__ = ["Granularity", "Allocation", "PruningConfig"]


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
    layers/groups (each keeps at least one channel)."""

    UNIFORM = "uniform"
    GLOBAL = "global"


@dataclass(frozen=True)
class PruningConfig:
    """Validated pruning settings (all validation happens in the constructor).

    Attributes:
        granularity: ``unstructured``, ``n:m``, ``channel``, ``head`` or ``block``.
        sparsity: Target fraction in ``[0, 1)`` of weights (unstructured), channels, heads or
            residual blocks to remove. For ``n:m`` it is ``1 - n/m`` (leave it ``None``).
        criterion: ``l1``, ``l2``, ``taylor``, ``obd``, ``bn_scale`` or ``random``.
        allocation: ``uniform`` or ``global``.
        overrides: Per-layer (unstructured, n:m) or per-group (channel, head: matched against the
            modules producing the channels) sparsity by name pattern (see :mod:`compressor.utils.names`), e.g.
            ``{"layers.2.*": 0.7}``.
        ignore: Module name patterns left untouched (for channel/head granularity, every group
            that touches an ignored module).
        protect_first_last: Leave the first and the last prunable layer (by registration order:
            usually the stem convolution and the classifier) unpruned in ``unstructured`` and
            ``n:m`` modes. In ``channel`` mode the model's input channels and output logits are
            never removed anyway.
        n: Kept weights per group of ``m`` (``n:m`` only).
        m: Group size along the input dimension (``n:m`` only).
        seed: Seed of the ``random`` criterion.
    """

    granularity: Granularity | str = Granularity.UNSTRUCTURED
    sparsity: float | None = None
    criterion: CriterionName | str = CriterionName.L1
    allocation: Allocation | str = Allocation.UNIFORM
    overrides: Mapping[str, float] = field(default_factory=dict)
    ignore: Sequence[str] = ()
    protect_first_last: bool = True
    n: int = 2
    m: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        granularity = check_enum("granularity", self.granularity, Granularity)
        set_(self, "granularity", granularity)
        set_(self, "criterion", check_enum("criterion", self.criterion, CriterionName))
        set_(self, "allocation", check_enum("allocation", self.allocation, Allocation))
        check_int("n", self.n, minimum=1)
        check_int("m", self.m, minimum=2)
        check_int("seed", self.seed, minimum=0)
        if granularity is Granularity.NM:
            if self.n >= self.m:
                raise ConfigError(f"N:M sparsity needs n < m, got n={self.n}, m={self.m} "
                                  "(e.g. n=2, m=4 keeps 2 of every 4 weights).")
            nm_sparsity = 1.0 - self.n / self.m
            if self.sparsity is not None and abs(self.sparsity - nm_sparsity) > 1e-9:
                raise ConfigError(f"`sparsity` is fixed by n:m ({self.n}:{self.m} -> "
                                  f"{nm_sparsity:g}); got {self.sparsity}. Leave it unset.")
            set_(self, "sparsity", nm_sparsity)
        else:
            if self.sparsity is None:
                raise ConfigError("`sparsity` is required (a fraction in [0, 1)).")
            check_float("sparsity", self.sparsity, 0.0, 1.0, high_inclusive=False,
                        hint="Use e.g. 0.5 to remove half.")
        if not isinstance(self.overrides, Mapping):
            raise InvalidTypeError(f"`overrides` must map name patterns to sparsities, got "
                                   f"{self.overrides!r}.")
        for pattern, value in self.overrides.items():
            check_float(f"overrides[{pattern!r}]", value, 0.0, 1.0, high_inclusive=False)
        if isinstance(self.ignore, str) or not all(isinstance(p, str) for p in self.ignore):
            raise InvalidTypeError(f"`ignore` must be a list of module name patterns, got "
                                   f"{self.ignore!r}.")
        set_(self, "ignore", tuple(self.ignore))
        set_(self, "overrides", dict(self.overrides))
        if self.criterion is CriterionName.BN_SCALE and not granularity.structured:
            raise ConfigError("criterion 'bn_scale' ranks channels by their normalisation scale; "
                              "use it with granularity 'channel', 'head' or 'block'.")
        if granularity is Granularity.NM and self.overrides:
            raise ConfigError("`overrides` do not apply to n:m sparsity (every layer gets n:m); "
                              "use `ignore` to leave layers dense.")

    @property
    def target(self) -> float:
        """The final sparsity (``1 - n/m`` for n:m)."""
        return float(self.sparsity or 0.0)
