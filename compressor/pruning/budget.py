"""``Budget``: what automatic allocation (``allocation="auto"``) must reach."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from compressor.errors import ConfigError
from compressor.utils.config import Config, PositiveInt, StrictBool

__all__ = ["Budget", "BUDGET_KINDS"]

#: The budget kinds; exactly one is given.
BUDGET_KINDS = ("latency_speedup", "latency_ms", "macs", "params")

_Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class Budget(Config):
    """The target of automatic allocation; give exactly one of ``latency_speedup``,
    ``latency_ms``, ``macs`` or ``params``.

    A latency budget is about the file that is deployed: the exported model (int8 when a
    quantization-aware training callback is in the same fit, else fp32, unless ``precision``
    says otherwise) against the dense fp32 model, in ONNX Runtime on this machine.
    """

    latency_speedup: Annotated[float, Field(gt=1.0)] | None = None
    """Exported model at least this many times faster than the dense fp32 model."""
    latency_ms: Annotated[float, Field(gt=0.0)] | None = None
    """Exported model's ONNX Runtime latency per batch at most this many milliseconds."""
    macs: _Fraction | None = None
    """Keep at most this fraction of the dense model's multiply-accumulates."""
    params: _Fraction | None = None
    """Keep at most this fraction of the dense model's parameters."""
    batch: PositiveInt = 32
    """Batch size the latency is measured at."""
    threads: PositiveInt = 1
    """ONNX Runtime intra-op threads the latency is measured with."""
    precision: Literal["auto", "int8", "fp32"] = "auto"
    """Precision of the deployed file (``auto``: int8 when QAT is in the same fit)."""
    channel_step: PositiveInt | Literal["auto"] | None = "auto"
    """Kept channel counts are multiples of this (``auto``: for latency budgets the step ONNX
    Runtime's kernels run fastest with on this CPU, measured; any count for MACs and parameter
    budgets; ``None``: any count)."""
    blocks: StrictBool = True
    """Also weigh replacing whole residual blocks by the identity against narrowing them (the
    chosen blocks are removed at the first pruning event)."""
    min_channels: PositiveInt = 4
    """Every group keeps at least this many channels (or all, if it has fewer)."""
    max_ratio: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    """No group loses more than this fraction of its channels."""
    ratios: tuple[_Fraction, ...] = (0.25, 0.5, 0.75)
    """Pruning ratios at which each group's sensitivity is measured."""
    max_batches: PositiveInt = 4
    """Validation batches each sensitivity point is evaluated on."""
    tolerance: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1
    """Relative miss of the measured latency that the report turns into a warning."""

    @model_validator(mode="after")
    def _one_kind(self) -> Budget:
        given = [kind for kind in BUDGET_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ConfigError(f"A budget names exactly one of {', '.join(BUDGET_KINDS)}, got "
                              f"{', '.join(given) or 'none'}; e.g. budget={{'latency_speedup': "
                              "3.0}.")
        return self

    @property
    def kind(self) -> str:
        """The budget kind given."""
        return next(kind for kind in BUDGET_KINDS if getattr(self, kind) is not None)

    @property
    def value(self) -> float:
        """The budget value given."""
        return float(getattr(self, self.kind))

    @property
    def is_latency(self) -> bool:
        """Whether the budget is measured in ONNX Runtime."""
        return self.kind.startswith("latency")
