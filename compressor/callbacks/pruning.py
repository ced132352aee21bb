"""``Pruning``: prune the student of any LightningModule on a schedule, inside ``Trainer.fit``.

A thin adapter over :class:`compressor.pruning.Pruner`. Masks are updated at the schedule's
events (epoch starts, or optimizer steps), kept exactly zero through every optimizer step, and,
for channel, head and block pruning, the model is physically compacted when the schedule ends:
the optimizer keeps its state for the surviving entries and training continues.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from compressor.automatic import CompressionPlan
from compressor.callbacks._automatic import make_plan, remove_blocks, unit_ratios
from compressor.callbacks._clock import Clock
from compressor.callbacks._finite import check_loss, stop_watching, watching_inputs
from compressor.callbacks._inputs import example_inputs, train_loader
from compressor.callbacks._lightning import rewrap_distributed, run_training_step_unlogged, start_method
from compressor.callbacks._student import find_student_path, get_student
from compressor.callbacks.state import (
    COMPACTION_PRIORITY,
    Milestone,
    compression_state,
    leave_state,
)
from compressor.errors import ConfigError, InvalidTypeError
from compressor.graph.compact import compaction_history, replay_history
from compressor.pruning import Allocation, Granularity, Pruner, PruningConfig
from compressor.utils.config import settings_config, with_config_signature
from compressor.utils.modes import temporary_mode
from compressor.utils.optim import replace_parameters

__all__ = ["Pruning"]


class Pruning(pl.Callback):
    """Prune the model being trained; compact it physically at the end (structured pruning).

    When to prune is set in epochs (``start_epoch``/``end_epoch``) or optimizer steps
    (``start_step``/``end_step``), never both:

    * at initialisation: ``schedule="one-shot", start_epoch=0`` (data-driven criteria score
      ``calibration_batches`` training batches first);
    * during training: a gradual schedule, e.g. ``schedule="cubic", start_epoch=0, end_epoch=6``
      (masks are updated at the start of every ``frequency``-th epoch; the target is reached at
      the start of ``end_epoch``, which then trains at full sparsity);
    * after training: ``schedule="one-shot", start_epoch=10`` followed by fine-tuning epochs.

    With ``granularity`` ``channel``, ``head`` or ``block`` and ``compact=True`` the pruned
    channels, heads or blocks are removed physically at the end of ``end_epoch`` (or right after
    the update at ``end_step``): later epochs train the smaller model.

    Non-finite numbers: if the training loss becomes NaN or Inf, the fit stops with a
    :class:`~compressor.errors.NonFiniteError` naming the global step, the active compression
    phases, the first module of the student whose output is non-finite on that batch (its
    forward is run again, only then) and a hint. The check costs one ``isfinite`` per step.

    Args:
        granularity: The ``granularity`` field, positionally (``Pruning("channel",
            sparsity=0.5)``).
        config: A :class:`~compressor.pruning.PruningConfig`; its fields may also be given as
            keyword arguments, which override those of ``config``.
        example_inputs: Inputs for tracing (structured granularities); by default the first
            training batch's inputs, else the LightningModule's ``example_input_array``.
        **settings: Fields of :class:`~compressor.pruning.PruningConfig`.
    """

    @with_config_signature(PruningConfig)
    def __init__(self, granularity: Granularity | str | None = None, /, *,
                 config: PruningConfig | None = None, example_inputs: Any = None,
                 **settings: Any) -> None:
        if granularity is not None:
            settings["granularity"] = granularity
        self.config = settings_config(PruningConfig, config, settings, "Pruning")
        self.clock = Clock(self.config.unit)
        self.schedule = self.config.make_schedule()
        self.compact = self.config.compact and self.config.granularity.structured
        self.calibration_batches = self.config.calibration_batches
        if example_inputs is not None and not isinstance(example_inputs, (torch.Tensor, tuple, list)):
            raise InvalidTypeError(f"`example_inputs` must be a tensor or a tuple of tensors, got "
                                   f"{type(example_inputs).__name__}.")
        self.example_inputs = example_inputs
        self.student_path = self.config.student
        self.log_per_layer = self.config.log_per_layer
        self.pruner: Pruner | None = None
        self.last_event = -1
        self.compacted = False
        self.history: list[dict[str, Any]] = []
        self.plan: CompressionPlan | None = None
        self._path = ""
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(granularity=self.config.granularity.value,
                                        sparsity=self.config.target, unit=self.clock.unit,
                                        start=self.schedule.start, end=self.schedule.end)

    @property
    def compression_phase(self) -> str | None:
        """``"pruning"`` while masks are applied and enforced (until compaction), else None."""
        return "pruning" if self.pruner is not None and not self.compacted \
            and self.last_event >= 0 else None

    @property
    def end_epoch(self) -> int | None:
        """The epoch at whose end the model is compacted (epoch schedules)."""
        return self.schedule.end if self.clock.unit == "epoch" else None

    # -------------------------------------------------------------- lifecycle
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._path = find_student_path(pl_module, self.student_path)
        if self.compact and start_method(trainer) != "popen":
            raise ConfigError(
                "Physical compaction cannot be used with strategy='ddp_spawn': the main process "
                "would receive weights of a smaller model than its own. Use strategy='ddp', or "
                "Pruning(compact=False) and compressor.compact() the model after training.")
        self.pruner, self.compacted, self.last_event, self.history = None, False, -1, []
        self.plan = None
        self._pending = None
        state = compression_state(pl_module)
        state.join(self, trainer)
        state.add_load_hook(self, COMPACTION_PRIORITY,
                            lambda checkpoint: self._replay(pl_module, checkpoint))
        if self.compact:
            owner = f"Pruning({self.config.granularity.value!r})"
            state.add_compaction(self, Milestone(owner, self.clock, self.schedule.end))

    def _replay(self, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Before a checkpoint's weights load: bring the student to its compacted shape."""
        saved = checkpoint.get("callbacks", {}).get(self.state_key)
        if saved and saved.get("history"):  # compacted, or blocks removed by the plan
            student = get_student(pl_module, self._path)
            # Histories are cumulative snapshots of the student's compactions: replay only what
            # another compressing callback has not replayed yet.
            done = len(compaction_history(student))
            replay_history(student, saved["history"][done:])
            self.compacted = bool(saved.get("compacted"))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.compacted and self.pruner is None:
            example = (example_inputs(trainer, pl_module, self.example_inputs, "Pruning")
                       if self.config.granularity.structured else None)
            # A QAT callback may already have swapped the student for its prepared graph (same
            # parameters): layer types and tracing then come from the original module (unless
            # the plan removed blocks: the student is then the reference).
            reference = None if self.history else compression_state(pl_module).pristine(self._path)
            self.pruner = Pruner(get_student(pl_module, self._path), self.config, example,
                                 reference=reference)
            if self._pending is not None:
                self.pruner.load_state_dict(self._pending)
                self._pending = None
            if self.plan is not None:  # resumed after the automatic allocation
                self.pruner.assign(unit_ratios(self.plan, self.pruner))
        self._attach(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pruner = self.pruner
        if pruner is None or self.last_event >= 0:
            return
        first_event = self.clock.now(trainer)
        if (pruner.criterion.needs_gradients and self.schedule.is_event(first_event)
                and not pruner.has_gradient_scores and self.calibration_batches):
            self._calibrate(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.clock.unit == "epoch":
            self._maybe_update(trainer, pl_module, trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        with watching_inputs(pl_module, self, lambda: get_student(pl_module, self._path)):
            self._attach_if_swapped(trainer, pl_module)
            if self.clock.unit == "step":
                self._maybe_update(trainer, pl_module, trainer.global_step)
                if self.compact and not self.compacted \
                        and trainer.global_step >= self.schedule.end \
                        and self.last_event >= self.schedule.end:
                    self._compact(trainer, pl_module)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        check_loss(trainer, pl_module, loss, get_student(pl_module, self._path))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        stop_watching(pl_module)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.pruner is not None and not self.compacted:
            self.pruner.accumulate()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is not None and not self.compacted:
            self._log(pl_module, self.pruner.status())
        if (self.clock.unit == "epoch" and self.compact and not self.compacted
                and trainer.current_epoch >= self.schedule.end and self.last_event >= self.schedule.end):
            self._compact(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        leave_state(pl_module, self)
        if self.pruner is not None:
            self.pruner.detach()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        leave_state(pl_module, self)  # Lightning skips teardown() when fit fails

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last_event": self.last_event, "compacted": self.compacted,
                                 "history": list(self.history)}
        if self.pruner is not None and not self.compacted:
            state["pruner"] = self.pruner.state_dict()
        if self.plan is not None:
            state["plan"] = self.plan.to_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_event = int(state_dict.get("last_event", -1))
        self.history = list(state_dict.get("history", []))
        self.plan = CompressionPlan.from_dict(state_dict["plan"]) if "plan" in state_dict else None
        if not state_dict.get("compacted") and "pruner" in state_dict:
            self._pending = state_dict["pruner"]

    # ---------------------------------------------------------------- helpers
    def _attach(self, trainer: pl.Trainer) -> None:
        if self.pruner is not None and not self.compacted:
            self.pruner.attach(trainer.optimizers)
            self._attached = (id(self.pruner.model), tuple(id(o) for o in trainer.optimizers))

    def _attach_if_swapped(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Follow the student or optimizers if another callback replaced them."""
        if self.pruner is None or self.compacted:
            return
        student = get_student(pl_module, self._path)
        current = (id(student), tuple(id(o) for o in trainer.optimizers))
        if current != getattr(self, "_attached", None):
            self.pruner.rebind(student)
            self._attach(trainer)

    def _maybe_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, now: int) -> None:
        if self.pruner is None or self.compacted or now <= self.last_event:
            return
        if not self.schedule.is_event(now):
            return
        if self.config.allocation is Allocation.AUTO and self.plan is None:
            self._follow_plan(trainer, pl_module, make_plan(trainer, pl_module, self.pruner))
        status = self.pruner.update(self.schedule(now))
        self.pruner.criterion.reset()
        self.last_event = now
        self._log(pl_module, status)

    def _follow_plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     plan: CompressionPlan) -> None:
        """Remove the blocks the plan chose (then prune a rebuilt pruner), assign its ratios."""
        self.plan = plan
        if plan.removed_blocks:
            assert self.pruner is not None
            self.pruner.detach()
            student = get_student(pl_module, self._path)
            remove_blocks(trainer, student, plan.removed_blocks)
            self.history = compaction_history(student)
            example = example_inputs(trainer, pl_module, self.example_inputs, "Pruning")
            self.pruner = Pruner(student, self.config, example)
            self._attach(trainer)
        assert self.pruner is not None
        self.pruner.assign(unit_ratios(plan, self.pruner))

    def _log(self, pl_module: pl.LightningModule, status: Any) -> None:
        values = {"pruning/sparsity": status.sparsity, "pruning/target": status.target,
                  "pruning/weight_sparsity": status.weight_sparsity}
        if self.log_per_layer:
            values.update({f"pruning/{unit}": value for unit, value in status.per_unit.items()})
        with contextlib.suppress(Exception):  # logging is optional outside of training hooks
            pl_module.log_dict(values, on_step=False, on_epoch=True)

    def _compact(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.pruner is not None
        result = self.pruner.compact()
        for optimizer in trainer.optimizers:
            replace_parameters(optimizer, result.replaced, result.removed)
        rewrap_distributed(trainer)
        self.history = compaction_history(get_student(pl_module, self._path))
        self.compacted = True

    def _calibrate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score a few training batches before pruning at step 0 (data-driven criteria)."""
        assert self.pruner is not None
        loader = train_loader(trainer)
        if loader is None:
            return
        model = get_student(pl_module, self._path)
        with temporary_mode(pl_module, False), torch.enable_grad():
            for index, batch in enumerate(loader):
                if index >= self.calibration_batches:
                    break
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                output = run_training_step_unlogged(trainer, batch, index)
                loss = output["loss"] if isinstance(output, Mapping) else output
                model.zero_grad(set_to_none=True)
                loss.backward()
                self.pruner.accumulate()
        model.zero_grad(set_to_none=True)

