"""Stopping a fit with a clear :class:`~compressor.errors.NonFiniteError` when NaN/Inf appear.

Shared by ``Pruning``, ``QuantizationAwareTraining`` and ``Distillation``, which call it from the
same hooks (whichever of them are in the callbacks list, in any order):

* ``on_train_batch_start``: the callback's own work runs inside :func:`watching_inputs` (without
  any hook of ours on the student, since that work may trace, copy or replace it); afterwards a
  forward pre-hook keeps references to the inputs the student receives in this batch.
* ``on_before_backward``: :func:`check_loss`, one ``isfinite`` check of the loss per step (the
  callbacks see the same loss tensor; only the first one checks it). The weights are still those
  that produced the loss, so the search below points at the culprit, not at weights a NaN
  update has already spoilt.
* ``on_train_batch_end``, ``on_exception``, ``teardown``: :func:`stop_watching`.

Only when a check fails is the student's forward run again on the recorded inputs
(:func:`compressor.utils.finite.find_non_finite`) to name the first module (or graph node) whose
output is non-finite. Under DDP every process checks its own values and raises on its own;
nothing is communicated, so the check cannot make processes wait for each other (a process whose
loss alone is non-finite stops, and the others fail at their next collective operation).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
from torch import Tensor, nn

from compressor.callbacks.state import InputWatch, compression_state, existing_state
from compressor.errors import NonFiniteError
from compressor.utils.finite import (
    all_finite,
    describe_submodule,
    find_non_finite,
    non_finite_parameters,
    non_finite_ranges,
    submodule_owner,
)

__all__ = ["PHASES", "active_phases", "watching_inputs", "watch_inputs", "stop_watching",
           "check_loss", "check_quantization_ranges", "check_parameters", "locate"]

#: The compression phases, in the order messages list them.
PHASES = ("pruning", "QAT", "distillation")

_MAX_LISTED = 3


def active_phases(trainer: pl.Trainer) -> list[str]:
    """The compression phases active now: the ``compression_phase`` of every callback that has
    one (``Pruning``, ``QuantizationAwareTraining``, ``Distillation``), in :data:`PHASES` order."""
    found = {getattr(callback, "compression_phase", None) for callback in trainer.callbacks}
    return [phase for phase in PHASES if phase in found]


def locate(error: NonFiniteError, trainer: pl.Trainer) -> NonFiniteError:
    """Add the global step and the active phases to an error raised by library code."""
    return error.locate(trainer.global_step, active_phases(trainer))


# ---------------------------------------------------------------------------- inputs

def _watch(pl_module: pl.LightningModule) -> InputWatch:
    return compression_state(pl_module).inputs


@contextlib.contextmanager
def watching_inputs(pl_module: pl.LightningModule, owner: object,
                    resolve: Callable[[], nn.Module]) -> Iterator[None]:
    """Wrap a callback's ``on_train_batch_start`` work: hooks of the previous batch are removed
    before it, and after it the student (``resolve()``, looked up then, so a student replaced by
    that work is followed) records the inputs of its first call in this batch."""
    _watch(pl_module).disarm()
    yield
    watch_inputs(pl_module, owner, resolve)


def watch_inputs(pl_module: pl.LightningModule, owner: object,
                 resolve: Callable[[], nn.Module]) -> None:
    """Record the inputs of the first call of ``resolve()`` in this batch (for a callback that
    changes nothing at batch start; others use :func:`watching_inputs`)."""
    watch = _watch(pl_module)
    watch.resolvers[id(owner)] = resolve
    watch.arm()


def stop_watching(pl_module: pl.LightningModule) -> None:
    """Remove the input hooks and forget this batch's inputs (end of a batch)."""
    state = existing_state(pl_module)
    if state is not None:
        state.inputs.disarm()
        state.inputs.checked = None


# ---------------------------------------------------------------------------- checks

def check_loss(trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor,
               student: nn.Module) -> None:
    """Raise :class:`NonFiniteError` if ``loss`` is NaN/Inf (call from ``on_before_backward``).

    Raises:
        NonFiniteError: names the step, the active phases, the first module of ``student`` with
            a non-finite output on this batch, and a hint.
    """
    watch = _watch(pl_module)
    if watch.checked is not None and watch.checked() is loss:
        return  # another compression callback has checked this loss already
    watch.checked = weakref.ref(loss)
    if all_finite(loss):
        return
    where, module = _search(watch, student, "student", "the loss computation produced the value "
                            "(or randomness such as dropout did)")
    raise _error(trainer, "the training loss", where, module)


def check_quantization_ranges(trainer: pl.Trainer, pl_module: pl.LightningModule,
                              student: nn.Module) -> None:
    """Raise if an observer of the QAT-prepared ``student`` recorded a non-finite range in this
    step (a few tensor operations; call after the forward, e.g. in ``on_before_backward``).

    Raises:
        NonFiniteError: names the observer(s), the step, the phases and where the first
            non-finite value of this batch appears.
    """
    bad = non_finite_ranges(student)
    if not bad:
        return
    listed = ", ".join(describe_submodule(student, name) for name in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    noun = "observer" if len(bad) == 1 else "observers"
    where, module = _search(_watch(pl_module), student, "student",
                            "the range did not come from this batch's values (the re-run "
                            "starts from reset ranges)")
    if module is None:
        module = submodule_owner(student, bad[0])
    raise _error(trainer, f"the quantization range of {noun} {listed}{more}", where, module)


def check_parameters(trainer: pl.Trainer, student: nn.Module) -> None:
    """Raise if parameters of ``student`` hold NaN/Inf before a step's forward (the previous
    optimizer step produced them from a finite loss, i.e. from non-finite gradients). QAT calls
    it at each batch start, since a weight observer would otherwise fail inside the forward.

    Raises:
        NonFiniteError: names the parameters, the step and the phases.
    """
    bad = non_finite_parameters(student)
    if not bad:
        return
    listed = ", ".join(repr(name) for name in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    module = bad[0].rpartition(".")[0] or None
    where = ("They were non-finite before this step's forward: the previous optimizer step "
             "produced them although its loss was finite, so its gradients were not.")
    raise _error(trainer, f"the student's parameter(s) {listed}{more}", where, module)


def _search(watch: InputWatch, model: nn.Module, role: str,
            if_finite: str) -> tuple[str, str | None]:
    """Where the first non-finite value appears when ``model`` runs this batch again
    (``if_finite`` explains a re-run without any)."""
    inputs = watch.inputs(model)
    if inputs is None:
        return (f"The {role}'s inputs of this batch were not recorded (it was not called "
                "directly), so the first non-finite module could not be searched.", None)
    source = find_non_finite(model, *inputs)
    if source is None:
        return f"Running the {role} on this batch again gives finite outputs: {if_finite}.", None
    return source.describe(role), source.module


def _error(trainer: pl.Trainer, what: str, where: str, module: str | None) -> NonFiniteError:
    phases = active_phases(trainer)
    hint = ("lower the learning rate, clip gradients (e.g. Trainer(gradient_clip_val=1.0)), and "
            "check this batch's inputs and labels")
    if "QAT" in phases:
        layer = repr(module) if module else "'<layer>'"
        hint += (f"; if only quantization makes it diverge, keep that layer in float: "
                 f"QuantizationAwareTraining(keep_float=[{layer}])")
    return NonFiniteError(what, where=where, hint=hint + ".", step=trainer.global_step,
                          phases=phases, module=module)
