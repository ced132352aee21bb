"""Teacher-student distillation for plain PyTorch models: soft-target (logit) KD, feature hints
with learned adapters, attention transfer and custom terms. ``Distiller`` combines them in any
training loop; the Lightning ``Distillation`` callback is a thin adapter over it."""

from compressor.distillation.adapters import AdapterSpec, adapter_spec, build_adapter
from compressor.distillation.attention import attention_map, attention_transfer_loss
from compressor.distillation.capture import ModuleCapture, resolve_layers
from compressor.distillation.config import DistillationConfig, DistillationTerm, FeatureLoss
from compressor.distillation.distiller import Distiller
from compressor.distillation.hints import hint_loss
from compressor.distillation.kd import logits_of, mix_task_and_kd, soft_target_loss
from compressor.distillation.optimizer import attach_parameters, find_group
from compressor.distillation.teacher import (
    TeacherPrecision,
    freeze,
    load_teacher_weights,
    snapshot,
    unfreeze,
)

__all__ = [
    "Distiller", "DistillationConfig", "DistillationTerm", "FeatureLoss", "TeacherPrecision",
    "soft_target_loss", "mix_task_and_kd", "logits_of",
    "hint_loss", "attention_map", "attention_transfer_loss",
    "AdapterSpec", "adapter_spec", "build_adapter",
    "ModuleCapture", "resolve_layers",
    "attach_parameters", "find_group",
    "freeze", "unfreeze", "snapshot", "load_teacher_weights",
]
