"""``Distillation``: teacher-student distillation on an unmodified LightningModule.

A thin adapter over :class:`compressor.distillation.Distiller`. In ``setup()`` it wraps the
module's ``training_step`` on the instance: the user's step runs with the student's forward pass
recorded by hooks, then the teacher runs under ``no_grad`` on exactly the student's inputs and the
distillation terms are added to the returned loss. No extra student forward, no change to the
user's code; ``teardown()`` restores the original ``training_step``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
from torch import Tensor, nn

from compressor.callbacks._finite import check_loss, locate, stop_watching, watch_inputs
from compressor.callbacks._lightning import wrap_training_step
from compressor.callbacks._student import find_student_path, get_student
from compressor.callbacks.state import compression_state, leave_state
from compressor.distillation import (
    DistillationConfig,
    Distiller,
    attach_parameters,
    load_teacher_weights,
    resolve_layers,
    snapshot,
)
from compressor.distillation.config import SELF_TEACHER
from compressor.errors import (
    CompositionError,
    ConfigError,
    InvalidTypeError,
    NonFiniteError,
)
from compressor.utils.config import settings_config, with_config_signature

__all__ = ["Distillation"]

_SELF = SELF_TEACHER


class Distillation(pl.Callback):
    """Distil a teacher into the student while the LightningModule trains.

    The loss becomes ``(1 - alpha) * task + alpha * kd + feature_weight * hints +
    attention_weight * attention + custom terms`` (see
    :class:`~compressor.distillation.DistillationConfig`). Logged: ``distill/task_loss``,
    ``distill/kd_loss`` and, when configured, ``distill/feature_loss``,
    ``distill/attention_loss`` and ``distill/<custom>``.

    Non-finite numbers: if the teacher's output or the training loss becomes NaN or Inf, the
    fit stops with a :class:`~compressor.errors.NonFiniteError` naming the global step, the
    active compression phases, what became non-finite (``"the teacher output"`` or the loss),
    the first module of the teacher (or student) whose output is non-finite on that batch (its
    forward is run again, only then) and a hint. The checks cost one ``isfinite`` per tensor
    of the teacher's output and one of the loss per step.

    The teacher is frozen, kept in eval mode, outside the optimizer and outside the
    LightningModule's ``state_dict``, and follows the student's device. A ``"self"`` teacher's
    weights are saved with this callback's state, so a resumed run keeps the original teacher
    (a run resumed from a checkpoint without that state uses the checkpoint's model). Feature
    adapters are created at the first step, trained in an extra parameter group of the
    optimizer and saved with this callback's state (never part of the student). The student is
    looked up at every step, so replacing it (compaction, QAT preparation) is followed.

    Args:
        teacher: The ``teacher`` field given positionally: ``"self"`` (default), an
            ``nn.Module`` or a checkpoint path.
        config: A :class:`~compressor.distillation.DistillationConfig`; its fields may also be
            given as keyword arguments (``Distillation("self", alpha=0.7)``), which override
            those of ``config``.
        **settings: Fields of :class:`~compressor.distillation.DistillationConfig`.

    Raises:
        ConfigError: invalid temperature/alpha/weights or a teacher path that does not exist.
        UnknownNameError: unknown layer names (the closest names are listed).
        InvalidTypeError: arguments of the wrong type.
    """

    @with_config_signature(DistillationConfig)
    def __init__(self, teacher: nn.Module | str | os.PathLike[str] | None = None, /,
                 *, config: DistillationConfig | None = None, **settings: Any) -> None:
        if teacher is not None:
            settings["teacher"] = teacher
        self.config = settings_config(DistillationConfig, config, settings, "Distillation")
        self.teacher_source = self.config.teacher
        if isinstance(self.teacher_source, nn.Module):
            resolve_layers(self.teacher_source, self.config.teacher_layers, "teacher")
        self.student_path = self.config.student
        self.distiller: Distiller | None = None
        self._trainer: pl.Trainer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._teacher_restored = False
        self._restore_step: Callable[[], None] | None = None
        self._path = ""

    @property
    def compression_phase(self) -> str | None:
        """``"distillation"`` while the training step is wrapped (during ``fit``), else None."""
        return "distillation" if self._restore_step is not None else None

    @property
    def state_key(self) -> str:
        source = self.teacher_source
        teacher = type(source).__name__ if isinstance(source, nn.Module) else str(source)
        return self._generate_state_key(teacher=teacher, student=self.student_path)

    # ------------------------------------------------------------------ lifecycle

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            raise CompositionError(
                f"Distillation adds its terms to the loss returned by training_step, but "
                f"{type(pl_module).__name__} uses manual optimization (its returned loss is not "
                "back-propagated). Use automatic optimization, or compute the loss with "
                "compressor.distillation.Distiller inside your training_step.")
        path = self._path = find_student_path(pl_module, self.student_path)
        state = compression_state(pl_module)
        state.join(self, trainer)
        # Another callback may already have changed the student in its setup (e.g. QAT
        # preparation); the teacher is built from the student as it was before that.
        original = state.pristine(path)
        if original is None:
            original = get_student(pl_module, path)
        teacher = self._build_teacher(original, path)
        self.distiller = Distiller(teacher, lambda: get_student(pl_module, path), self.config)
        self._trainer, self._teacher_restored = trainer, False
        if self._pending_state is not None:
            self._apply_state(self._pending_state)
        self._wrap_training_step(trainer, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.teacher_source == _SELF and not self._teacher_restored:
            self._refresh_self_teacher(trainer, pl_module)
        self._sync_optimizer()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        watch_inputs(pl_module, self, lambda: get_student(pl_module, self._path))

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: Tensor) -> None:
        check_loss(trainer, pl_module, loss, get_student(pl_module, self._path))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        stop_watching(pl_module)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        # Adapters are outside the DDP-wrapped module: average their gradients like DDP does.
        if self.distiller is None or trainer.world_size <= 1:
            return
        for parameter in self.distiller.parameters():
            if parameter.grad is not None:
                parameter.grad = trainer.strategy.reduce(parameter.grad, reduce_op="mean")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            leave_state(pl_module, self)
            self._release()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        leave_state(pl_module, self)
        self._release()  # Lightning skips teardown() when fit fails

    def _release(self) -> None:
        """Restore ``training_step`` and the teacher's flags."""
        if self._restore_step is None:
            return
        self._restore_step()
        self._restore_step = None
        if self.distiller is not None:
            self.distiller.close()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        if self.distiller is None:
            return dict(self._pending_state or {})
        state: dict[str, Any] = {"adapters": self.distiller.state_dict()["adapters"]}
        if self.teacher_source == _SELF:
            state["teacher"] = self.distiller.teacher.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.distiller is None:
            self._pending_state = state_dict
            return
        self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        if self.distiller is None:
            raise RuntimeError("Distillation state can only be applied after setup().")
        if self.teacher_source == _SELF and "teacher" in state:
            try:
                self.distiller.teacher.load_state_dict(state["teacher"])
            except RuntimeError as error:
                raise CompositionError(
                    "The saved \"self\" teacher does not fit the student's architecture at "
                    "setup; another callback probably changed the student (e.g. replayed a "
                    "compaction) before Distillation's setup ran. "
                    f"Details: {str(error).strip().splitlines()[-1].strip()}") from None
            self._teacher_restored = True
        self.distiller.load_state_dict({"adapters": state.get("adapters", {})})
        self._pending_state = None
        self._sync_optimizer()

    # ------------------------------------------------------------------ internals

    def _build_teacher(self, student: nn.Module, path: str) -> nn.Module:
        source = self.teacher_source
        if isinstance(source, nn.Module):
            return source
        if not path:
            raise ConfigError(
                f"teacher={str(source)!r} copies the student's architecture, but the student is "
                "the whole LightningModule. Pass `student=` with the attribute path of the "
                "model to compress (e.g. student=\"model\").")
        teacher = snapshot(student)
        if source != _SELF:
            load_teacher_weights(teacher, source, preferred_prefix=f"{path}.")
        return teacher

    def _refresh_self_teacher(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Make the "self" teacher the model training starts from: the checkpoint's weights when
        resuming without saved teacher, rank 0's snapshot in a distributed run."""
        if self.distiller is None:
            return
        teacher = self.distiller.teacher
        if trainer.ckpt_path is not None:
            student_state = self.distiller.student.state_dict()
            teacher_state = teacher.state_dict()
            if {k: v.shape for k, v in student_state.items()} != \
                    {k: v.shape for k, v in teacher_state.items()}:
                raise CompositionError(
                    f"Resuming from {trainer.ckpt_path}, which holds no Distillation state, but "
                    "the student's architecture changed after Distillation's setup, so teacher="
                    "\"self\" cannot take the checkpoint's weights. Start distillation from a "
                    "checkpoint of the uncompressed model.")
            teacher.load_state_dict(student_state)
        elif trainer.world_size > 1:
            teacher.load_state_dict(trainer.strategy.broadcast(teacher.state_dict(), src=0))

    def _sync_optimizer(self) -> None:
        """Keep the adapters in the (first) optimizer, also after it was rebuilt."""
        trainer = self._trainer
        if self.distiller is None or trainer is None or not trainer.optimizers:
            return
        optimizer = trainer.optimizers[0]
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs
                      if getattr(config.scheduler, "optimizer", None) is optimizer]
        attach_parameters(optimizer, list(self.distiller.parameters()), schedulers)

    def _wrap_training_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Add the distillation terms to every training step's loss (the strategy's step is
        wrapped; the LightningModule keeps its own ``training_step``)."""

        def around(step: Callable[[], Any]) -> Any:
            if self.distiller is None:
                return step()
            with self.distiller.capture():
                output = step()
            return self._distil(pl_module, output)

        self._restore_step = wrap_training_step(trainer, around)

    def _distil(self, pl_module: pl.LightningModule, output: Any) -> Any:
        if self.distiller is None:
            return output
        task_loss = _task_loss(output)
        if task_loss is None:  # the user's step skipped this batch
            self.distiller.discard()
            return output
        try:
            loss = self.distiller(task_loss, create_adapters=True)
        except NonFiniteError as error:  # e.g. the teacher output: add the step and phases
            raise locate(error, pl_module.trainer) from None
        self._sync_optimizer()
        distributed = pl_module.trainer.world_size > 1
        for name, value in self.distiller.last_terms.items():
            pl_module.log(f"distill/{name}", value, on_step=True, on_epoch=True,
                          sync_dist=distributed)
        if isinstance(output, Tensor):
            return loss
        return {**output, "loss": loss}


def _task_loss(output: Any) -> Tensor | None:
    """The loss in a ``training_step`` result (a tensor, a mapping with ``"loss"`` or None)."""
    if output is None or isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("loss"), Tensor):
        return output["loss"]
    raise InvalidTypeError(
        f"training_step returned {type(output).__name__}; Distillation needs the loss tensor or "
        "a dict with a 'loss' tensor (or None to skip the batch).")
