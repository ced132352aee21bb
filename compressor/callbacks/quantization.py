"""``QuantizationAwareTraining``: int8 QAT of the student of any LightningModule.

A thin adapter over :mod:`compressor.quantization`. At ``start_epoch`` (or ``start_step``) the
student is captured with ``torch.export`` and replaced by its QAT-prepared graph; the prepared
graph shares the student's parameters, so the optimizer, pruning masks and distillation keep
working. Batch-norm statistics and observers freeze on schedule; observers are off during
validation; at the end of ``fit`` the student is converted to int8 (before ``ExportONNX`` runs).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from compressor.callbacks._clock import Clock, steps_per_epoch
from compressor.callbacks._finite import (
    check_loss,
    check_parameters,
    check_quantization_ranges,
    stop_watching,
    watching_inputs,
)
from compressor.callbacks._inputs import example_inputs
from compressor.callbacks._lightning import rewrap_distributed
from compressor.callbacks._student import find_student_path, get_student, set_student
from compressor.callbacks.state import (
    QUANTIZATION_PRIORITY,
    Milestone,
    compression_state,
    leave_state,
)
from compressor.errors import ConfigError
from compressor.quantization import (
    QuantizationConfig,
    convert,
    freeze_batch_norm,
    prepare_qat,
    set_fake_quant,
    set_observers,
    set_qat_training,
    set_training,
)
from compressor.utils.config import settings_config, with_config_signature

__all__ = ["QuantizationAwareTraining"]


class QuantizationAwareTraining(pl.Callback):
    """Train the student with int8 fake quantization, then convert it to an int8 model.

    Give the schedule in epochs or in optimizer steps (not both). Epoch events happen at the
    start of the epoch; step events before the step.

    Non-finite numbers: if the training loss, a quantization range recorded by an observer or
    (before a step's forward) a weight becomes NaN or Inf, the fit stops with a
    :class:`~compressor.errors.NonFiniteError` — not an assertion from inside an observer —
    naming the global step, the active compression phases, what became non-finite, the first
    graph node whose output is non-finite on that batch with the module it comes from (found by
    running the prepared graph again, only then) and a hint (``keep_float`` among others). Per
    step this costs one ``isfinite`` of the loss, a few tensor operations over the observers'
    ranges (while they are not frozen) and one min/max pass per parameter (a few milliseconds
    for ResNet-18 on one CPU thread).

    Args:
        config: A :class:`~compressor.quantization.QuantizationConfig` (the schedule and what
            is quantized); or give its fields as keyword arguments
            (``QuantizationAwareTraining(start_epoch=4, freeze_bn_epoch=5)``), which also
            override the fields of ``config``.
        example_inputs: Inputs for ``torch.export`` (default: the first training batch's
            inputs, else the LightningModule's ``example_input_array``).
        **settings: Fields of :class:`~compressor.quantization.QuantizationConfig`.

    Raises:
        ConfigError: invalid schedule values.
        CompositionError: (at setup) a ``Pruning`` callback would compact the model after QAT
            has started; the message says how to fix the schedules.
    """

    @with_config_signature(QuantizationConfig)
    def __init__(self, *, config: QuantizationConfig | None = None, example_inputs: Any = None,
                 **settings: Any) -> None:
        self.config = settings_config(QuantizationConfig, config, settings,
                                      "QuantizationAwareTraining")
        self.clock = Clock(self.config.unit)
        self.unit = self.config.unit
        self.start = self.config.start
        self.freeze_bn_at = self.config.freeze_bn_at
        self.freeze_observer_at = self.config.freeze_observer_at
        self.convert_at_end = self.config.convert_at_end
        self.example_inputs = example_inputs
        self.student_path = self.config.student
        self._path = ""
        self.prepared = self.bn_frozen = self.observers_frozen = self.converted = False
        self._observed = False  # whether a training step has set the quantization ranges

    @property
    def state_key(self) -> str:
        return self._generate_state_key(unit=self.unit, start=self.start)

    @property
    def compression_phase(self) -> str | None:
        """``"QAT"`` from the preparation until the int8 conversion, else None."""
        return "QAT" if self.prepared and not self.converted else None

    # -------------------------------------------------------------- lifecycle
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._path = find_student_path(pl_module, self.student_path)
        if not self._path:
            raise ConfigError("QAT replaces the student by its prepared graph, so it must be a "
                              "submodule: pass `student=` with its attribute path.")
        self.prepared = self.bn_frozen = self.observers_frozen = self.converted = False
        self._observed = False
        state = compression_state(pl_module)
        state.join(self, trainer)
        state.add_capture(self, Milestone("QAT", self.clock, self.start))
        state.add_load_hook(self, QUANTIZATION_PRIORITY,
                            lambda checkpoint: self._resume(trainer, pl_module, checkpoint))
        state.add_finalizer(self, 0, self.finish)
        if self.start == 0:
            self._prepare(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = compression_state(pl_module)
        state.pristine_students.clear()  # every callback has built what it needed from them
        state.check_order(steps_per_epoch(trainer))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.unit == "epoch":
            self._on_time(trainer, pl_module, trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        with watching_inputs(pl_module, self, lambda: get_student(pl_module, self._path)):
            if self.unit == "step":
                self._on_time(trainer, pl_module, trainer.global_step)
            if self.prepared and not self.converted:
                student = get_student(pl_module, self._path)
                # Lightning sets `.training` flags directly; switch the exported graph explicitly.
                set_qat_training(student, True)
                # A NaN weight would make its observer fail inside the forward.
                check_parameters(trainer, student)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        student = get_student(pl_module, self._path)
        check_loss(trainer, pl_module, loss, student)
        if self.prepared and not self.converted and not self.observers_frozen:
            check_quantization_ranges(trainer, pl_module, student)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._observed = self._observed or self.prepared
        stop_watching(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prepared and not self.converted:
            student = get_student(pl_module, self._path)
            set_qat_training(student, False)
            set_observers(student, False)
            if not self._observed:  # e.g. the sanity check before the first step: no ranges yet
                set_fake_quant(student, False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prepared and not self.converted:
            student = get_student(pl_module, self._path)
            set_fake_quant(student, True)
            if not self.observers_frozen:
                set_observers(student, True)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        student = get_student(pl_module, self._path) if self._path else None
        if student is not None and (self.prepared or self.converted):
            set_training(student, False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log_dict({"qat/active": float(self.prepared),
                            "qat/bn_frozen": float(self.bn_frozen),
                            "qat/observers_frozen": float(self.observers_frozen)},
                           on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finish(pl_module)

    def finish(self, pl_module: pl.LightningModule) -> None:
        """Convert the student to int8 now if QAT ran and ``convert_at_end`` (idempotent).

        Runs at ``on_fit_end``, after the checkpoints of the last epoch were written (they hold
        the trainable QAT state, so they resume and restore)."""
        if self.prepared and self.convert_at_end and not self.converted:
            student = get_student(pl_module, self._path)
            set_student(pl_module, self._path, convert(student))
            self.converted = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            leave_state(pl_module, self)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        leave_state(pl_module, self)  # Lightning skips teardown() when fit fails

    # ---------------------------------------------------------------- events
    def _on_time(self, trainer: pl.Trainer, pl_module: pl.LightningModule, now: int) -> None:
        if not self.prepared and now >= self.start:
            self._prepare(trainer, pl_module)
            rewrap_distributed(trainer)
        student = get_student(pl_module, self._path)
        if self.prepared and not self.bn_frozen and self.freeze_bn_at is not None \
                and now >= self.freeze_bn_at:
            freeze_batch_norm(student)
            self.bn_frozen = True
        if self.prepared and not self.observers_frozen and self.freeze_observer_at is not None \
                and now >= self.freeze_observer_at:
            set_observers(student, False)
            self.observers_frozen = True

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        student = get_student(pl_module, self._path)
        inputs = example_inputs(trainer, pl_module, self.example_inputs, "QuantizationAwareTraining")
        compression_state(pl_module).remember_pristine(self._path, student)
        prepared = prepare_qat(student, inputs, self.config)
        set_student(pl_module, self._path, prepared)
        self.prepared = True

    def _resume(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                checkpoint: dict[str, Any]) -> None:
        """Before a checkpoint's weights load: prepare the student if QAT had started."""
        saved = checkpoint.get("callbacks", {}).get(self.state_key) or {}
        if saved.get("prepared") and not self.prepared:
            self._prepare(trainer, pl_module)
        self._observed = bool(saved.get("prepared"))  # the ranges come with the weights
        student = get_student(pl_module, self._path)
        if saved.get("bn_frozen") and self.prepared:
            freeze_batch_norm(student)
            self.bn_frozen = True
        if saved.get("observers_frozen") and self.prepared:
            set_observers(student, False)
            self.observers_frozen = True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"prepared": self.prepared, "bn_frozen": self.bn_frozen,
                "observers_frozen": self.observers_frozen, "converted": self.converted}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("converted"):
            raise ConfigError("This checkpoint was saved after the int8 conversion; there is "
                              "nothing left to train. Load its weights for evaluation instead.")
