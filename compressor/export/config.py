"""``ExportConfig``: where and how the final model is exported to ONNX, verified and timed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StrictInt, field_validator

from compressor.errors import ConfigError
from compressor.export.parity import ParityConfig
from compressor.utils.config import Config, PositiveInt, StrictBool

__all__ = ["ExportConfig"]


class ExportConfig(Config):
    """Settings of the ``ExportONNX`` callback and of recipe ``export`` sections (see
    :func:`~compressor.export.export_onnx` for what is verified)."""

    path: Path | None = None
    """Target ``.onnx`` file (recipes: default ``<run folder>/model.onnx``)."""
    student: str | None = None
    """Attribute path of the model to export inside the LightningModule (``None``: the only
    child module with parameters; ``""``: the LightningModule itself)."""
    batch_sizes: tuple[PositiveInt, ...] = (1, 32)
    """Batch sizes whose ONNX Runtime latency is measured (empty to skip)."""
    latency_repeats: PositiveInt = 20
    """Interleaved timed runs per model and batch size."""
    verify: StrictBool = True
    """Check parity, audit the int8 kernels and measure latency in ONNX Runtime."""
    parity: ParityConfig = Field(default_factory=ParityConfig)
    """Parity thresholds."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Extra ``metadata_props`` written into the file."""
    dynamic_batch: StrictBool = True
    """Give the file a symbolic batch dimension."""
    opset: Annotated[StrictInt, Field(ge=18)] | None = None
    """ONNX opset (``None``: the exporter's default)."""

    @field_validator("path")
    @classmethod
    def _onnx_suffix(cls, path: Path | None) -> Path | None:
        if path is not None and path.suffix != ".onnx":
            raise ConfigError(f"`path` must be a path ending with .onnx, got {str(path)!r}.")
        return path
