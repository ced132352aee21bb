"""``Distiller``: teacher, feature capture and distillation losses for any training loop.

Without Lightning::

    config = DistillationConfig(alpha=0.7, features={"layer3": "layer3"})
    distiller = Distiller(teacher, student, config)
    distiller.build_adapters(example_inputs)              # only needed for feature hints
    optimizer = torch.optim.SGD([*student.parameters(), *distiller.parameters()], lr=0.1)
    for inputs, labels in loader:
        with distiller.capture():                          # records the student's inputs/outputs
            logits = student(inputs)
        loss = distiller(F.cross_entropy(logits, labels))  # teacher runs here, under no_grad
        optimizer.zero_grad(); loss.backward(); optimizer.step()
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from compressor.distillation.adapters import AdapterSpec, adapter_spec, build_adapter
from compressor.distillation.attention import attention_transfer_loss
from compressor.distillation.capture import ModuleCapture, resolve_layers
from compressor.distillation.config import DistillationConfig
from compressor.distillation.hints import hint_loss
from compressor.distillation.kd import logits_of, mix_task_and_kd, soft_target_loss
from compressor.distillation.teacher import (
    TeacherPrecision,
    channels_last_inputs,
    check_separate,
    freeze,
    has_native_bf16,
    keep_eval,
    teacher_autocast,
    to_float32,
    try_channels_last,
    unfreeze,
)
from compressor.errors import ConfigError, InvalidTypeError, NonFiniteError
from compressor.utils.finite import all_finite, find_non_finite
from compressor.utils.inputs import as_args
from compressor.utils.modes import record_modes, restore_modes

__all__ = ["Distiller"]


class Distiller:
    """Holds a frozen teacher, the capture hooks and the loss terms of one distillation setup.

    Args:
        teacher: The teacher model. It is frozen in place (``requires_grad=False``, eval mode)
            until :meth:`close`; it is never registered in, nor trained with, the student.
        student: The student model, or a function returning it. A function is called each time
            a capture is armed, so a student replaced between steps (compacted, QAT-prepared) is
            followed.
        config: What to distil (defaults to logit KD with ``temperature=4``, ``alpha=0.5``).
        seed: Seed of the adapters' initialisation (identical on every process).

    Raises:
        InvalidTypeError: ``teacher``/``student`` are not modules.
        UnknownNameError: a configured layer does not exist (the closest names are listed).
        ConfigError: the teacher shares parameters with the student.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module | Callable[[], nn.Module],
                 config: DistillationConfig | None = None, seed: int = 0) -> None:
        if not isinstance(teacher, nn.Module):
            raise InvalidTypeError(f"`teacher` must be an nn.Module, got {type(teacher).__name__}.")
        self.config = config if config is not None else DistillationConfig()
        if not isinstance(self.config, DistillationConfig):
            raise InvalidTypeError(f"`config` must be a DistillationConfig, got "
                                   f"{type(self.config).__name__}.")
        self._resolve = student if not isinstance(student, nn.Module) else (lambda: student)
        current = self._resolve()
        if not isinstance(current, nn.Module):
            raise InvalidTypeError(f"`student` must be an nn.Module (or return one), got "
                                   f"{type(current).__name__}.")
        check_separate(teacher, current)
        resolve_layers(current, self.config.student_layers, "student")
        resolve_layers(teacher, self.config.teacher_layers, "teacher")
        self.teacher = teacher
        self._frozen = freeze(teacher)
        self._channels_last: bool | None = None  # decided at the first teacher forward
        self._seed = seed
        self._student = ModuleCapture(self._resolve, self.config.student_layers, "student")
        self._teacher = ModuleCapture(lambda: self.teacher, self.config.teacher_layers, "teacher")
        self.adapters = nn.ModuleDict()
        self._specs: dict[str, AdapterSpec | None] = {}
        self.last_terms: dict[str, Tensor] = {}

    @property
    def student(self) -> nn.Module:
        """The current student module."""
        return self._resolve()

    def capture(self) -> contextlib.AbstractContextManager[ModuleCapture]:
        """Context in which the student's (single) forward pass is recorded."""
        return self._student.armed()

    def parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters of the adapters (give them to the optimizer)."""
        return self.adapters.parameters()

    def __call__(self, task_loss: Tensor, student_output: Any = None, inputs: Any = None, *,
                 create_adapters: bool = False) -> Tensor:
        """The combined loss (see :class:`DistillationConfig`) for the last captured step.

        Args:
            task_loss: The loss of the task (e.g. cross-entropy), a scalar tensor.
            student_output: The student's output; default: the one captured by :meth:`capture`.
            inputs: The student's input (a tensor or a tuple of positional arguments); default:
                the captured one. The teacher runs on exactly these inputs.
            create_adapters: Build missing adapters on the fly (the caller must then add the
                new :meth:`parameters` to its optimizer). Otherwise a missing adapter is an error.

        Raises:
            ConfigError: shapes are incompatible, the student ran more or less than once, a
                layer did not run, or an adapter is missing.
            NonFiniteError: the teacher's output is NaN/Inf; the message names the teacher's
                first module whose output is non-finite on these inputs.
        """
        try:
            return self._combined_loss(task_loss, student_output, inputs, create_adapters)
        finally:
            self.discard()

    def _combined_loss(self, task_loss: Tensor, student_output: Any, inputs: Any,
                       create_adapters: bool) -> Tensor:
        captured = self._student
        if student_output is None or self.config.student_layers:
            captured.check_complete("while the capture was armed")
        output = captured.output if student_output is None else student_output
        if inputs is None:
            args, kwargs = captured.args, captured.kwargs
        else:
            args, kwargs = as_args(inputs), {}
        teacher_output = self._teacher_forward(args, kwargs)
        kd = soft_target_loss(logits_of(output, "student"), logits_of(teacher_output, "teacher"),
                              self.config.temperature)
        total = mix_task_and_kd(task_loss, kd, self.config.alpha)
        terms = {"task_loss": task_loss.detach().reshape(()), "kd_loss": kd.detach()}
        if self.config.features:
            hints = self._feature_loss(create_adapters)
            total = total + self.config.feature_weight * hints
            terms["feature_loss"] = hints.detach()
        if self.config.attention:
            attention = self._attention_loss()
            total = total + self.config.attention_weight * attention
            terms["attention_loss"] = attention.detach()
        for name, term in self.config.losses.items():
            value = _scalar(term(output, teacher_output, args), name)
            total = total + value
            terms[name] = value.detach()
        self.last_terms = terms
        return total

    def _teacher_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not args and not kwargs:
            raise ConfigError("No student inputs were captured: call the student inside "
                              "`with distiller.capture():` or pass `inputs=`.")
        device = self._follow_device(args, kwargs)
        keep_eval(self.teacher)
        precision = self.config.teacher_precision
        if precision is TeacherPrecision.BF16 and not has_native_bf16(device):
            warnings.warn(f"teacher_precision=\"bf16\" on {device}, which has no native bfloat16 "
                          "instructions: the teacher may run slower than in float32. Use "
                          "teacher_precision=\"auto\" to pick bf16 only where it is fast.",
                          stacklevel=3)
        with torch.no_grad(), teacher_autocast(precision, device):
            teacher_args = channels_last_inputs(args) if self._channels_last else args
            with self._teacher.armed():
                output = self.teacher(*teacher_args, **kwargs)
            if not all_finite(output):  # one isfinite per output tensor
                raise self._non_finite_teacher(teacher_args, kwargs)
            if self._channels_last is None:  # one trial forward, at the first step only
                self._channels_last = try_channels_last(self.teacher, args, kwargs, output)
        self._teacher.check_complete("for one batch")
        self._teacher.features = to_float32(self._teacher.features)
        return to_float32(output)

    def _non_finite_teacher(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NonFiniteError:
        """The error for a non-finite teacher output, locating its first non-finite module
        (the teacher runs again on the same inputs, under the same autocast)."""
        source = find_non_finite(self.teacher, args, kwargs)
        where = (source.describe("teacher") if source is not None else
                 "Running the teacher on this batch again gives finite outputs (randomness?).")
        hint = ("the teacher is frozen, so training did not cause this: check the teacher's "
                "weights (e.g. a checkpoint saved after a run diverged) and this batch's inputs")
        if self.config.teacher_precision is not TeacherPrecision.FP32:
            hint += "; the teacher ran under bfloat16 autocast: also try teacher_precision=\"fp32\""
        return NonFiniteError("the teacher output", where=where, hint=hint + ".",
                              module=None if source is None else source.module)

    def _follow_device(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.device:
        """Move teacher and adapters to the device of the student's inputs; return it."""
        reference = next(self.teacher.parameters(), None)
        tensor = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        if tensor is None:
            return reference.device if reference is not None else torch.device("cpu")
        if reference is not None and reference.device != tensor.device:
            self.teacher.to(tensor.device)
            self.adapters.to(tensor.device)
        return tensor.device

    def _feature_loss(self, create_adapters: bool) -> Tensor:
        losses = []
        for index, (student_layer, teacher_layer) in enumerate(self.config.features.items()):
            student_feature = self._student.features[student_layer]
            teacher_feature = self._teacher.features[teacher_layer]
            pair = f"{student_layer!r} -> {teacher_layer!r}"
            adapter = self._adapter(str(index), student_feature, teacher_feature, pair,
                                    create_adapters)
            projected = adapter(student_feature) if adapter is not None else student_feature
            losses.append(hint_loss(projected, teacher_feature, self.config.feature_loss))
        return torch.stack(losses).sum()

    def _attention_loss(self) -> Tensor:
        losses = [attention_transfer_loss(self._student.features[s], self._teacher.features[t])
                  for s, t in self.config.attention.items()]
        return torch.stack(losses).sum()

    def _adapter(self, key: str, student_feature: Tensor, teacher_feature: Tensor, pair: str,
                 create: bool) -> nn.Module | None:
        """The adapter of hint ``key`` for the current shapes, built or rebuilt if allowed."""
        spec = adapter_spec(student_feature.shape, teacher_feature.shape, pair)
        known = key in self._specs
        if known and self._specs[key] == spec:
            return self.adapters[key] if spec is not None else None
        if not known and spec is None:
            self._specs[key] = None
            return None
        shapes = f"student {tuple(student_feature.shape)} vs teacher {tuple(teacher_feature.shape)}"
        if not create:
            raise ConfigError(
                f"Feature hint {pair} needs {'a new' if known else 'an'} adapter ({shapes}). "
                "Call distiller.build_adapters(example_inputs) before creating the optimizer "
                "and add distiller.parameters() to it, so that the adapter is trained.")
        if known:
            warnings.warn(f"The features of hint {pair} changed shape ({shapes}), e.g. after "
                          "channel pruning: its adapter is rebuilt from a fresh initialisation.",
                          stacklevel=2)
        self._set_adapter(key, spec, student_feature)
        return self.adapters[key] if spec is not None else None

    def _set_adapter(self, key: str, spec: AdapterSpec | None, like: Tensor | None = None) -> None:
        self._specs[key] = spec
        if key in self.adapters:
            del self.adapters[key]
        if spec is not None:
            generator = torch.Generator().manual_seed(self._seed + int(key))
            adapter = build_adapter(spec, generator)
            if like is not None:
                adapter = adapter.to(like.device, like.dtype)
            self.adapters[key] = adapter

    def build_adapters(self, *args: Any, **kwargs: Any) -> list[nn.Parameter]:
        """Create the adapters the feature hints need by running student and teacher once on
        example inputs (no gradients, student temporarily in eval mode). Returns the adapter
        parameters (add them to the optimizer)."""
        student = self.student
        modes = record_modes(student)
        student.eval()
        try:
            with torch.no_grad(), self.capture():
                student(*args, **kwargs)
            self._student.check_complete("by build_adapters")
            self._teacher_forward(self._student.args, self._student.kwargs)
            for index, (s, t) in enumerate(self.config.features.items()):
                self._adapter(str(index), self._student.features[s], self._teacher.features[t],
                              f"{s!r} -> {t!r}", create=True)
        finally:
            restore_modes(student, modes)
            self.discard()
        return list(self.parameters())

    def state_dict(self) -> dict[str, Any]:
        """The adapters' specifications and weights (enough to rebuild them)."""
        return {"adapters": {key: {"spec": None if spec is None else spec.to_dict(),
                                   "weights": self.adapters[key].state_dict()
                                   if spec is not None else {}}
                             for key, spec in self._specs.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the adapters from :meth:`state_dict` (on the teacher's device).

        Raises:
            ConfigError: the state does not describe adapters of this configuration.
        """
        saved = state.get("adapters", {})
        expected = {str(i) for i in range(len(self.config.features))}
        if not set(saved) <= expected:
            raise ConfigError(
                f"The saved distillation state has adapters {sorted(saved)} but this "
                f"configuration has {len(expected)} feature hint(s); resume with the same "
                "`features=`.")
        device = next(self.teacher.parameters(), torch.empty(0)).device
        for key, entry in saved.items():
            spec = None if entry["spec"] is None else AdapterSpec.from_dict(entry["spec"])
            self._set_adapter(key, spec)
            if spec is not None:
                self.adapters[key].load_state_dict(entry["weights"])
                self.adapters[key].to(device)

    def discard(self) -> None:
        """Forget the current recordings (e.g. when the step is skipped)."""
        self._student.clear()
        self._teacher.clear()

    def close(self) -> None:
        """Give the teacher back its ``requires_grad`` flags and modes; drop recordings."""
        unfreeze(self.teacher, self._frozen)
        if self._channels_last:
            self.teacher.to(memory_format=torch.contiguous_format)
            self._channels_last = None
        self.discard()
        self.last_terms = {}


def _scalar(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shown = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InvalidTypeError(f"Custom distillation term {name!r} must return a scalar tensor, "
                               f"got {shown}.")
    return value.reshape(())
