"""Attention transfer (Zagoruyko & Komodakis, 2017): match the normalised spatial attention maps
of student and teacher feature maps. Channel counts may differ; spatial sizes must match."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from compressor.errors import ConfigError

__all__ = ["attention_map", "attention_transfer_loss"]


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention of a ``(N, C, *spatial)`` feature map: the channel mean of
    ``|feature|**p``, flattened to ``(N, positions)`` and L2-normalised per sample.

    Raises:
        ConfigError: the feature has no spatial dimensions.
    """
    if feature.dim() < 3:
        raise ConfigError(
            f"Attention transfer needs feature maps (N, C, H, W) or (N, C, L), got shape "
            f"{tuple(feature.shape)}. Pick a convolutional layer, or use `features=` for vectors.")
    energy = feature.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(energy, p=2.0, dim=1)


def attention_transfer_loss(student_feature: Tensor, teacher_feature: Tensor,
                            p: float = 2.0) -> Tensor:
    """Squared L2 distance between the two normalised attention maps, averaged over samples
    (between 0 and 2 per sample, since the maps are non-negative with unit norm).

    The paper's ``beta / 2 * ||.||`` with the element mean of common implementations equals
    this loss times ``beta / positions``; set the weight accordingly.

    Raises:
        ConfigError: batch or spatial sizes differ (both shapes are shown).
    """
    student_map = attention_map(student_feature, p)
    teacher_map = attention_map(teacher_feature.to(student_feature.dtype), p)
    if student_map.shape != teacher_map.shape:
        raise ConfigError(
            f"Attention maps need the same batch and spatial size: student "
            f"{tuple(student_feature.shape)} vs teacher {tuple(teacher_feature.shape)} "
            "(channels may differ). Pair layers at the same resolution.")
    return (student_map - teacher_map).pow(2).sum(dim=1).mean()
