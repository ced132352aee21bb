"""Feature-hint losses (FitNets-style): distance between a student feature, projected to the
teacher's shape by an adapter, and the teacher feature."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from compressor.distillation.config import FeatureLoss
from compressor.errors import ConfigError

__all__ = ["hint_loss"]


def hint_loss(student_feature: Tensor, teacher_feature: Tensor,
              kind: FeatureLoss | str = FeatureLoss.MSE) -> Tensor:
    """Distance between two features of the same shape.

    ``"mse"`` is the mean squared error over all elements; ``"cosine"`` is
    ``1 - cosine similarity`` of the flattened per-sample features, averaged over the batch.

    Raises:
        ConfigError: the shapes differ (project the student feature with an adapter first).
    """
    if student_feature.shape != teacher_feature.shape:
        raise ConfigError(
            f"Feature hint shapes differ: student {tuple(student_feature.shape)} vs teacher "
            f"{tuple(teacher_feature.shape)}. Project the student feature with an adapter first.")
    teacher_feature = teacher_feature.to(student_feature.dtype)
    if FeatureLoss(kind) is FeatureLoss.MSE:
        return F.mse_loss(student_feature, teacher_feature)
    similarity = F.cosine_similarity(student_feature.flatten(1), teacher_feature.flatten(1), dim=1)
    return (1.0 - similarity).mean()
