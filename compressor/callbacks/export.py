"""``ExportONNX``: export the trained (compressed) model at the end of ``fit`` and verify it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from compressor.callbacks._student import find_student_path, get_student
from compressor.callbacks.state import existing_state
from compressor.errors import ConfigError, InvalidTypeError
from compressor.export.config import ExportConfig
from compressor.export.onnx_export import export_onnx
from compressor.export.report import ExportReport
from compressor.utils.config import settings_config, with_config_signature
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
        path: The ``path`` field given positionally (the target ``.onnx`` file).
        config: A :class:`~compressor.export.ExportConfig`; its fields may also be given as
            keyword arguments (``ExportONNX("m.onnx", batch_sizes=(1,))``), which override
            those of ``config``.
        example_inputs: A tensor or tuple of tensors for the student's ``forward``.
        **settings: Fields of :class:`~compressor.export.ExportConfig`.
    """

    @with_config_signature(ExportConfig)
    def __init__(self, path: str | Path | None = None, /, *, config: ExportConfig | None = None,
                 example_inputs: Any = None, **settings: Any) -> None:
        if path is not None:
            settings["path"] = path
        self.config = settings_config(ExportConfig, config, settings, "ExportONNX")
        if self.config.path is None:
            raise ConfigError("ExportONNX needs the `path` of the .onnx file to write, e.g. "
                              "ExportONNX(\"out/model.onnx\").")
        if example_inputs is not None and not _is_inputs(example_inputs):
            raise InvalidTypeError("`example_inputs` must be a tensor or a tuple of tensors, got "
                                   f"{type(example_inputs).__name__}.")
        self.path = self.config.path
        self.example_inputs = example_inputs
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
        config = self.config
        model = get_student(pl_module, find_student_path(pl_module, config.student))
        metadata = {"trained_epochs": trainer.current_epoch, "global_step": trainer.global_step,
                    **config.metadata}
        self.report = export_onnx(
            model, self.path, self._inputs(pl_module), dynamic_batch=config.dynamic_batch,
            opset=config.opset, metadata=metadata, verify=config.verify, parity=config.parity,
            latency_batches=config.batch_sizes, latency_repeats=config.latency_repeats)
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
