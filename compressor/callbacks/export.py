"""``ExportONNX``: export the trained (compressed) model at the end of ``fit`` and verify it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from compressor._validation import check_int
from compressor.callbacks._student import find_student_path, get_student
from compressor.callbacks.state import existing_state
from compressor.errors import ConfigError, InvalidTypeError
from compressor.export.onnx_export import export_onnx
from compressor.export.parity import ParityConfig
from compressor.export.report import ExportReport
from compressor.utils.inputs import batch_inputs, tensor_inputs

__all__ = ["ExportONNX"]

log = logging.getLogger(__name__)

_KEPT_ROWS = 8  # rows of the first training batch kept as example / parity inputs


class ExportONNX(pl.Callback):
    """Export the model to ONNX at the end of ``fit`` (global rank 0 only) and verify it.

    Runs in ``on_fit_end``; a ``QuantizationAwareTraining`` callback is asked to convert its
    model first, whatever the callback order, so the export sees the final int8 model. The
    report (size, parity, int8-kernel audit, latency) is logged, printed, written to
    ``<name>.report.json`` and kept on :attr:`report`. Works on any LightningModule.

    Example inputs, in order of preference: ``example_inputs``; the first 8 rows of the first
    training batch, assuming the batch is the input tensor, a tuple/list starting with it
    (``(x, y)``) or a mapping with a key such as ``"x"``/``"input"``/``"image"`` (see
    :func:`compressor.utils.inputs.batch_inputs`; any other layout is a clear error asking for
    ``example_inputs``); the LightningModule's ``example_input_array``.

    Args:
        path: Target ``.onnx`` file.
        example_inputs: A tensor or tuple of tensors for the student's ``forward``.
        student: Attribute path of the model to export inside the LightningModule (``None``:
            the only child module with parameters; ``""``: the LightningModule itself).
        batch_sizes: Batch sizes whose ONNX Runtime latency is measured (empty to skip).
        verify: Check parity, audit kernels and measure latency in ONNX Runtime.
        parity: Parity thresholds.
        metadata: Extra ``metadata_props`` for the file.
        dynamic_batch: Symbolic batch dimension.
        opset: ONNX opset (``None``: the exporter's default).
    """

    def __init__(self, path: str | Path, example_inputs: Any = None, student: str | None = None,
                 batch_sizes: Sequence[int] = (1, 32), verify: bool = True,
                 parity: ParityConfig | None = None, metadata: Mapping[str, Any] | None = None,
                 dynamic_batch: bool = True, opset: int | None = None) -> None:
        if not isinstance(path, (str, Path)) or Path(path).suffix != ".onnx":
            raise ConfigError(f"`path` must be a path ending with .onnx, got {path!r}.")
        if example_inputs is not None and not _is_inputs(example_inputs):
            raise InvalidTypeError("`example_inputs` must be a tensor or a tuple of tensors, got "
                                   f"{type(example_inputs).__name__}.")
        if student is not None and not isinstance(student, str):
            raise InvalidTypeError(f"`student` must be an attribute path (str) or None, got "
                                   f"{student!r}.")
        self.batch_sizes = tuple(check_int("batch_sizes[]", b, minimum=1) for b in batch_sizes)
        if parity is not None and not isinstance(parity, ParityConfig):
            raise InvalidTypeError(f"`parity` must be a ParityConfig, got {type(parity).__name__}.")
        if opset is not None:
            check_int("opset", opset, minimum=18)
        self.path = Path(path)
        self.example_inputs = example_inputs
        self.student = student
        self.verify = verify
        self.parity = parity
        self.metadata = dict(metadata or {})
        self.dynamic_batch = dynamic_batch
        self.opset = opset
        self.report: ExportReport | None = None
        self._captured: torch.Tensor | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self.example_inputs is None and self._captured is None:
            inputs = batch_inputs(batch, who="ExportONNX",
                                  hint="Pass `example_inputs=` to ExportONNX.")
            self._captured = inputs[:_KEPT_ROWS].detach().cpu().clone()

    def _inputs(self, pl_module: pl.LightningModule) -> tuple[torch.Tensor, ...]:
        if self.example_inputs is not None:
            chosen = self.example_inputs
        elif self._captured is not None:
            chosen = self._captured
        elif getattr(pl_module, "example_input_array", None) is not None:
            chosen = pl_module.example_input_array
        else:
            raise ConfigError(
                "ExportONNX has no example inputs: none were given, no training batch was seen "
                "and the LightningModule has no `example_input_array`. Pass `example_inputs=`.")
        return tensor_inputs("example_inputs", chosen)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        state = existing_state(pl_module)
        if state is not None:  # whatever the callbacks' order: e.g. export the int8 model
            state.finalize(pl_module)
        model = get_student(pl_module, find_student_path(pl_module, self.student))
        metadata = {"trained_epochs": trainer.current_epoch, "global_step": trainer.global_step,
                    **self.metadata}
        self.report = export_onnx(
            model, self.path, self._inputs(pl_module), dynamic_batch=self.dynamic_batch,
            opset=self.opset, metadata=metadata, verify=self.verify, parity=self.parity,
            latency_batches=self.batch_sizes)
        log.info("ONNX export report:\n%s", self.report)
        print(f"ONNX export written to {self.report.path}\n{self.report}", flush=True)
        figures = _figures(self.report)
        for logger in trainer.loggers:
            logger.log_metrics(figures, step=trainer.global_step)
            logger.save()


def _figures(report: ExportReport) -> dict[str, float]:
    """Numeric highlights of a report for the trainer's loggers."""
    figures = {"export/file_size_bytes": float(report.file_size)}
    if report.audit is not None:
        figures["export/int8_compute_ops"] = float(report.audit.int8_compute)
        figures["export/float_compute_ops"] = float(report.audit.float_compute)
    for result in report.latency:
        figures[f"export/latency_ms_batch{result.batch}"] = result.median_ms
    return figures


def _is_inputs(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return (isinstance(value, (tuple, list)) and bool(value)
            and all(isinstance(v, torch.Tensor) for v in value))
