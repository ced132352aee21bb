"""The one object the compression callbacks of a fit coordinate through.

Every compression callback (``Pruning``, ``QuantizationAwareTraining``, ``Distillation``,
``ExportONNX``) joins the :class:`CompressionState` kept in a single attribute of the
LightningModule, ``pl_module.compression_state``; it is removed again when the last of them
leaves (``teardown`` or a failed fit). Nothing else is set on the user's module, and no callback
looks into another one's internals. It holds:

* the **pristine students**: copies of a student taken before the first change a callback makes
  to it (``Distillation(teacher="self")`` builds the uncompressed teacher from it, whatever the
  order of the callbacks);
* **load hooks**: work that must run on a checkpoint *before* its weights load when a fit
  resumes (replaying a compaction, preparing QAT), in priority order;
* **finalizers**: work that must happen before the model is exported (converting QAT to int8);
* **milestones**: when a callback changes the student's shapes (compaction) and when one
  captures its graph (QAT), so a wrong order is reported before any training;
* the **input watch** used to name the first non-finite module when NaN/Inf appear.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from compressor.callbacks._clock import Clock
from compressor.callbacks._lightning import check_version, loaded_checkpoint
from compressor.errors import CompositionError

__all__ = ["CompressionState", "Milestone", "InputWatch", "compression_state", "existing_state",
           "leave_state", "STATE_ATTRIBUTE", "COMPACTION_PRIORITY", "QUANTIZATION_PRIORITY"]

#: The LightningModule attribute holding the state.
STATE_ATTRIBUTE = "compression_state"

#: Load-hook priorities: compaction is replayed before QAT re-prepares the compacted student.
COMPACTION_PRIORITY = 10
QUANTIZATION_PRIORITY = 20

LoadHook = Callable[[dict[str, Any]], None]
Finalizer = Callable[[pl.LightningModule], None]


@dataclass(frozen=True)
class Milestone:
    """An event of one callback's schedule: ``at`` on ``clock``, described by ``owner``."""

    owner: str
    clock: Clock
    at: int


@dataclass
class _Record:
    """The inputs of the first call of one student in the current batch."""

    module: weakref.ref[nn.Module]
    handle: RemovableHandle | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    seen: bool = False

    def hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.seen or module is not self.module():  # deep copies share the hook: ignore them
            return
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return
        self.args, self.kwargs, self.seen = args, dict(kwargs), True


class InputWatch:
    """How to find each callback's student, the current batch's recorded inputs, and the last
    loss checked for NaN/Inf."""

    def __init__(self) -> None:
        self.resolvers: dict[int, Callable[[], nn.Module]] = {}
        self.records: dict[int, _Record] = {}
        self.checked: weakref.ref[Tensor] | None = None

    def arm(self) -> None:
        """Record the inputs of every watched student's first call from now on."""
        for resolve in self.resolvers.values():
            student = resolve()
            if id(student) in self.records:
                continue
            record = _Record(weakref.ref(student))
            record.handle = student.register_forward_pre_hook(record.hook, with_kwargs=True)
            self.records[id(student)] = record

    def disarm(self) -> None:
        """Remove the recording hooks and forget the recorded inputs."""
        for record in self.records.values():
            if record.handle is not None:
                record.handle.remove()
        self.records.clear()

    def inputs(self, student: nn.Module) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The recorded ``(args, kwargs)`` of ``student`` in this batch, if it was called."""
        record = self.records.get(id(student))
        if record is None or not record.seen or record.module() is not student:
            return None
        return record.args, record.kwargs


class CompressionState:
    """What the compression callbacks of one LightningModule share (see the module docstring).

    Get it with :func:`compression_state`; callbacks :meth:`join` in ``setup`` and
    :meth:`leave` in ``teardown``.
    """

    def __init__(self, pl_module: pl.LightningModule) -> None:
        self.pristine_students: dict[str, nn.Module] = {}
        self.load_hooks: dict[int, tuple[int, LoadHook]] = {}
        self.finalizers: dict[int, tuple[int, Finalizer]] = {}
        self.compactions: dict[int, Milestone] = {}
        self.captures: dict[int, Milestone] = {}
        self.inputs = InputWatch()
        self.members: set[int] = set()
        self._module = weakref.ref(pl_module)
        self._trainer: pl.Trainer | None = None
        self._load_handle: RemovableHandle | None = None
        self._restored: int | None = None

    # ------------------------------------------------------------- membership
    def join(self, owner: object, trainer: pl.Trainer) -> None:
        """Register ``owner`` (a callback) for this fit."""
        self.members.add(id(owner))
        self._trainer = trainer

    def leave(self, owner: object) -> None:
        """Forget everything ``owner`` registered; the last one out removes the state."""
        key = id(owner)
        self.members.discard(key)
        for table in (self.load_hooks, self.finalizers, self.compactions, self.captures):
            table.pop(key, None)
        self.inputs.disarm()
        self.inputs.resolvers.pop(key, None)
        self.inputs.checked = None
        if self.members:
            return
        if self._load_handle is not None:
            self._load_handle.remove()
            self._load_handle = None
        module = self._module()
        if module is not None and vars(module).get(STATE_ATTRIBUTE) is self:
            del vars(module)[STATE_ATTRIBUTE]

    # --------------------------------------------------------------- students
    def remember_pristine(self, path: str, student: nn.Module) -> None:
        """Keep a copy of ``student`` as it was before its first change (once per path)."""
        if path not in self.pristine_students:
            self.pristine_students[path] = copy.deepcopy(student)

    def pristine(self, path: str) -> nn.Module | None:
        """The copy stored by :meth:`remember_pristine`, if any."""
        return self.pristine_students.get(path)

    # ------------------------------------------------------------ load hooks
    def add_load_hook(self, owner: object, priority: int, hook: LoadHook) -> None:
        """Call ``hook(checkpoint)`` before a resumed checkpoint's weights load into the
        LightningModule (lower ``priority`` first; re-adding for ``owner`` replaces it)."""
        self.load_hooks[id(owner)] = (priority, hook)
        module = self._module()
        if self._load_handle is None and module is not None:
            self._load_handle = module.register_load_state_dict_pre_hook(self._before_load)

    def _before_load(self, module: nn.Module, state_dict: Any, prefix: str, *_: Any) -> None:
        checkpoint = loaded_checkpoint(self._trainer) if self._trainer is not None else None
        if prefix or checkpoint is None or self._restored == id(checkpoint):
            return  # not a checkpoint the trainer restores, or already handled
        self._restored = id(checkpoint)
        for _, run in sorted(self.load_hooks.values(), key=lambda item: item[0]):
            run(checkpoint)

    # ------------------------------------------------------------- finalizers
    def add_finalizer(self, owner: object, priority: int, finalizer: Finalizer) -> None:
        """Run ``finalizer(pl_module)`` before the model is exported (lower priority first)."""
        self.finalizers[id(owner)] = (priority, finalizer)

    def finalize(self, pl_module: pl.LightningModule) -> None:
        """Run every finalizer (each must be idempotent)."""
        for _, run in sorted(self.finalizers.values(), key=lambda item: item[0]):
            run(pl_module)

    # ------------------------------------------------------------- milestones
    def add_compaction(self, owner: object, milestone: Milestone) -> None:
        """``owner`` changes the student's shapes at the end of ``milestone`` (then checks the
        order against every capture)."""
        self.compactions[id(owner)] = milestone
        self.check_order()

    def add_capture(self, owner: object, milestone: Milestone) -> None:
        """``owner`` captures the student's graph at the start of ``milestone``."""
        self.captures[id(owner)] = milestone
        self.check_order()

    def check_order(self, per_epoch: int | None = None) -> None:
        """Every compaction must happen before every capture. Schedules in the same unit are
        compared at once; epochs against steps once ``per_epoch`` is known.

        Raises:
            CompositionError: a compaction would happen after a capture; says how to fix it.
        """
        for compaction in self.compactions.values():
            for capture in self.captures.values():
                if compaction.clock.unit == capture.clock.unit:
                    ends, starts = compaction.at + 1, capture.at
                elif per_epoch is not None:
                    ends = compaction.clock.first_step(compaction.at, per_epoch, at_end=True)
                    starts = capture.clock.first_step(capture.at, per_epoch)
                else:
                    continue
                if ends > starts:
                    raise _order_error(compaction, capture, per_epoch is not None
                                       and compaction.clock.unit != capture.clock.unit)


def _order_error(compaction: Milestone, capture: Milestone, mixed: bool) -> CompositionError:
    if mixed:
        return CompositionError(
            f"{compaction.owner} compacts the model at {compaction.clock.unit} "
            f"{compaction.at} (once it ends), after {capture.owner} captures it at the start of "
            f"{capture.clock.unit} {capture.at}: end the pruning schedule before QAT starts.")
    unit = capture.clock.unit
    when = f"the end of epoch {compaction.at}" if unit == "epoch" else f"step {compaction.at}"
    return CompositionError(
        f"{compaction.owner} compacts the model at {when}, but "
        f"{capture.owner} starts at {unit} {capture.at}: the model must be compacted before it "
        f"is captured for QAT. Set QAT's start_{unit} to at least {compaction.at + 1}, or end "
        f"the pruning schedule before {unit} {capture.at}.")


def compression_state(pl_module: pl.LightningModule) -> CompressionState:
    """The :class:`CompressionState` of ``pl_module`` (created on first use)."""
    state = existing_state(pl_module)
    if state is None:
        check_version()
        state = CompressionState(pl_module)
        vars(pl_module)[STATE_ATTRIBUTE] = state
    return state


def leave_state(pl_module: pl.LightningModule, owner: object) -> None:
    """``owner`` leaves the state of ``pl_module`` (teardown or a failed fit), if there is one."""
    state = existing_state(pl_module)
    if state is not None:
        state.leave(owner)


def existing_state(pl_module: pl.LightningModule) -> CompressionState | None:
    """The :class:`CompressionState` of ``pl_module`` if a compression callback created one."""
    state = vars(pl_module).get(STATE_ATTRIBUTE)
    return state if isinstance(state, CompressionState) else None
