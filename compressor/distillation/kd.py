"""Soft-target knowledge distillation (Hinton et al., 2015) and its mixing with the task loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.nn import functional as F

from compressor.errors import ConfigError, InvalidTypeError

__all__ = ["soft_target_loss", "mix_task_and_kd", "logits_of"]


def logits_of(output: Any, role: str) -> Tensor:
    """The logits in a model output: the tensor itself, ``output["logits"]`` or ``output.logits``.

    Raises:
        InvalidTypeError: the output holds no logits tensor.
    """
    if isinstance(output, Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise InvalidTypeError(
        f"The {role}'s output is a {type(output).__name__}, not a logits tensor (nor a mapping or "
        "object with a `logits` tensor). Soft-target distillation needs logits; return them from "
        "forward() or add a custom term with `losses=`.")


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, averaged over samples.

    The class dimension is the last one; any leading dimensions (batch, sequence positions) are
    averaged over. The ``T²`` factor keeps the gradient size independent of ``T``.

    Raises:
        ConfigError: the two logits tensors have different shapes (both are shown).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(
            f"Teacher and student outputs have incompatible shapes: student "
            f"{tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}. "
            "Soft-target distillation needs logits over the same classes; check that the "
            "teacher was built for the same task (number of classes).")
    classes = student_logits.shape[-1]
    student_log_p = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=-1)
    teacher_log_p = F.log_softmax(teacher_logits.reshape(-1, classes).to(student_logits.dtype)
                                  / temperature, dim=-1)
    kl = F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True)
    return kl * temperature**2


def mix_task_and_kd(task_loss: Tensor, kd_loss: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * task_loss + alpha * kd_loss``.

    Raises:
        InvalidTypeError: ``task_loss`` is not a scalar tensor.
    """
    if not isinstance(task_loss, Tensor) or task_loss.numel() != 1:
        shown = tuple(task_loss.shape) if isinstance(task_loss, Tensor) else type(task_loss)
        raise InvalidTypeError(f"The task loss must be a scalar tensor, got {shown}.")
    return (1.0 - alpha) * task_loss.reshape(()) + alpha * kd_loss.to(task_loss.dtype)

