"""Teacher handling: freezing (no gradients, eval mode) and snapshots of a student."""

from __future__ import annotations

import contextlib
import copy
import enum
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree

from compressor.errors import ConfigError
from compressor.utils.io import load_checkpoint
from compressor.utils.modes import ModuleModes, record_modes, restore_modes

__all__ = ["FrozenState", "freeze", "unfreeze", "keep_eval", "snapshot", "check_separate",
           "load_teacher_weights", "find_prefix", "uses_channels_last", "channels_last_inputs",
           "try_channels_last",
           "TeacherPrecision", "has_native_bf16", "teacher_autocast", "to_float32"]


class TeacherPrecision(str, enum.Enum):
    """Precision of the teacher's forward pass.

    ``fp32`` runs it as it is; ``bf16`` runs it under bfloat16 autocast (about twice as fast on
    CPUs with native bfloat16 instructions -- AVX512-BF16 or AMX -- and on recent GPUs; logits
    differ by about 1e-2, far below what soft targets resolve); ``auto`` picks ``bf16`` where
    the device has native bfloat16 support and ``fp32`` elsewhere. The teacher's outputs and
    features are handed to the losses in float32 either way.
    """

    FP32 = "fp32"
    BF16 = "bf16"
    AUTO = "auto"


@functools.cache
def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions and matmuls natively (asked once per
    device: the teacher forward checks it at every step)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def teacher_autocast(precision: TeacherPrecision,
                     device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a teacher forward on ``device`` at ``precision``."""
    if precision is TeacherPrecision.FP32 or (precision is TeacherPrecision.AUTO
                                              and not has_native_bf16(device)):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_float32(value: Any) -> Any:
    """``value`` (a tensor or a nested container) with bfloat16/float16 tensors as float32."""
    def convert(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.dtype in (torch.bfloat16, torch.float16):
            return leaf.float()
        return leaf
    return _pytree.tree_map(convert, value)


@dataclass(frozen=True)
class FrozenState:
    """What :func:`freeze` changed, so :func:`unfreeze` can put it back."""

    requires_grad: tuple[bool, ...]
    modes: ModuleModes


def uses_channels_last(module: nn.Module) -> bool:
    """Whether a frozen teacher may run faster in channels-last memory format (it has 2-D
    convolutions; on CPUs their channels-last kernels are about 1.4x faster in inference)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def channels_last_inputs(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """4-D floating-point tensors of ``args`` in channels-last memory format (same values)."""
    return tuple(a.contiguous(memory_format=torch.channels_last)
                 if isinstance(a, torch.Tensor) and a.dim() == 4 and a.is_floating_point() else a
                 for a in args)


def try_channels_last(teacher: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      expected: Any) -> bool:
    """Switch ``teacher`` to channels-last memory format if its forward still runs on ``args``
    and gives ``expected`` (its output in the plain format); otherwise leave it as it was.

    The user's code decides whether the layout is safe: ``x.view(x.size(0), -1)`` after the
    convolutions, for one, fails on channels-last activations. Call under ``no_grad`` (and the
    teacher's autocast), with ``teacher`` in eval mode.
    """
    if not uses_channels_last(teacher):
        return False
    teacher.to(memory_format=torch.channels_last)
    try:
        actual = teacher(*channels_last_inputs(args), **kwargs)
        same = _same_outputs(expected, actual)
    except Exception:  # noqa: BLE001 - any failure means: keep the plain layout
        same = False
    if not same:
        teacher.to(memory_format=torch.contiguous_format)
    return same


def _same_outputs(expected: Any, actual: Any) -> bool:
    """Equal structure and values up to the rounding that another kernel order gives."""
    first, second = _pytree.tree_flatten(expected), _pytree.tree_flatten(actual)
    if first[1] != second[1]:
        return False
    for a, b in zip(first[0], second[0]):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return False
        if isinstance(a, torch.Tensor):
            if a.shape != b.shape or a.dtype != b.dtype:
                return False
            if a.is_floating_point():
                a, b = a.float(), b.float()
                scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
                tolerance = (2e-2 if torch.is_autocast_enabled(a.device.type) else 1e-4) * scale
                if a.numel() and float((a - b).abs().max()) > tolerance:
                    return False
            elif not torch.equal(a, b):
                return False
    return True


def freeze(module: nn.Module) -> FrozenState:
    """Put ``module`` in eval mode (through its ``eval()``) and stop gradients to its
    parameters, in place."""
    state = FrozenState(tuple(p.requires_grad for p in module.parameters()), record_modes(module))
    module.requires_grad_(False)
    module.eval()
    return state


def unfreeze(module: nn.Module, state: FrozenState) -> None:
    """Restore the ``requires_grad`` flags and train/eval modes recorded by :func:`freeze`."""
    for parameter, flag in zip(module.parameters(), state.requires_grad, strict=True):
        parameter.requires_grad_(flag)
    restore_modes(module, state.modes)


def keep_eval(module: nn.Module) -> None:
    """Switch ``module`` back to eval mode if anything set a submodule to training mode."""
    if any(m.training for m in module.modules()):
        module.eval()


def snapshot(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (e.g. the student before compression)."""
    teacher = copy.deepcopy(module)
    freeze(teacher)
    return teacher


def check_separate(teacher: nn.Module, student: nn.Module) -> None:
    """Raise if the teacher shares parameters with the student (freezing would stop training).

    Raises:
        ConfigError: the two models share parameters.
    """
    student_ids = {id(p) for p in student.parameters()}
    if teacher is student or any(id(p) in student_ids for p in teacher.parameters()):
        raise ConfigError(
            "The teacher shares parameters with the student, so freezing it would also freeze "
            "the student. Pass teacher=\"self\" to distil from a frozen copy of the student, or "
            "a separate model.")


def find_prefix(keys: list[str], model_keys: list[str], preferred: str = "") -> str | None:
    """The key prefix (``""``, ``"model."``, ...) under which ``keys`` hold exactly the
    ``model_keys``; ``preferred`` wins when several fit. ``None`` when none fits.

    Raises:
        ConfigError: several prefixes fit and none is ``preferred``.
    """
    if not model_keys:
        return None
    anchor, expected = model_keys[0], set(model_keys)
    candidates = {key[: len(key) - len(anchor)] for key in keys if key.endswith(anchor)}
    fitting = sorted(prefix for prefix in candidates if (prefix == "" or prefix.endswith("."))
                     and {k[len(prefix):] for k in keys if k.startswith(prefix)} == expected)
    if preferred in fitting:
        return preferred
    if len(fitting) > 1:
        raise ConfigError(
            f"The checkpoint holds several models of the student's architecture (key prefixes "
            f"{', '.join(repr(c) for c in fitting)}). Save the teacher's own state_dict with "
            "torch.save(model.state_dict(), path) and pass that file.")
    return fitting[0] if fitting else None


def load_teacher_weights(teacher: nn.Module, path: str | os.PathLike[str],
                         preferred_prefix: str = "") -> None:
    """Load a Lightning checkpoint (weights under some prefix such as ``"model."``) or a plain
    state dict of ``teacher``'s architecture into ``teacher``.

    Raises:
        ConfigError: the file is missing, holds no state dict, or its weights do not fit.
    """
    payload: Any = load_checkpoint(path, "Teacher checkpoint")
    state = payload.get("state_dict", payload) if isinstance(payload, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConfigError(f"{path} holds neither a Lightning checkpoint nor a state dict.")
    model_keys = list(teacher.state_dict())
    keys = [key for key in state if isinstance(key, str)]
    prefix = find_prefix(keys, model_keys, preferred_prefix)
    if prefix is None:
        missing = [k for k in model_keys if not any(key.endswith(k) for key in keys)][:5]
        raise ConfigError(
            f"The weights in {path} do not fit the student's architecture: no key prefix holds "
            f"exactly its {len(model_keys)} entries (e.g. missing {missing or model_keys[:3]}). "
            "Pass a Lightning checkpoint or a state dict of a model with the student's "
            "architecture, or an nn.Module as teacher.")
    weights = {key[len(prefix):]: state[key] for key in keys if key.startswith(prefix)}
    try:
        teacher.load_state_dict(weights)
    except RuntimeError as error:
        raise ConfigError(f"The weights in {path} do not fit the student's architecture: "
                          f"{str(error).splitlines()[-1].strip()}") from None
