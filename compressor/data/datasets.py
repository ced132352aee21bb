"""Image classification data held in memory as tensors (no Lightning needed).

Each loader returns an :class:`ImageSplits` of ``uint8``/``float`` image tensors shaped
``(N, C, H, W)`` and ``int64`` labels; :class:`TensorImageDataset` normalises on access.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from compressor.data.idx import read_idx
from compressor.data.sources import find_fashion_mnist

__all__ = [
    "ImageSplits",
    "TensorImageDataset",
    "BatchAugment",
    "load_fashion_mnist",
    "load_digits",
    "make_synthetic",
    "FASHION_MNIST_CLASSES",
]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class ImageSplits:
    """Train and test images (``(N, C, H, W)``) with their labels and class names."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]


class TensorImageDataset(Dataset):
    """Images and labels in memory; images are scaled to ``[0, 1]`` then standardised.

    Args:
        images: ``(N, C, H, W)`` tensor, ``uint8`` (0-255) or float (already in ``[0, 1]``).
        labels: ``(N,)`` integer labels.
        mean: Per-dataset mean used for standardisation.
        std: Per-dataset standard deviation used for standardisation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        scaled = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        self.images = ((scaled - mean) / std).contiguous()
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class BatchAugment:
    """Collate function that stacks samples, then applies random crops (zero padding) and
    horizontal flips to the whole batch. Used for training batches only."""

    def __init__(self, padding: int = 2, flip: bool = True) -> None:
        self.padding, self.flip = padding, flip

    def __call__(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        images = torch.stack([image for image, _ in samples])
        labels = torch.stack([label for _, label in samples])
        if self.flip:
            flip = torch.rand(len(images)) < 0.5
            images[flip] = images[flip].flip(-1)
        if self.padding:
            pad, (height, width) = self.padding, images.shape[-2:]
            padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
            offsets = torch.randint(0, 2 * pad + 1, (len(images), 2)).tolist()
            images = torch.stack([padded[i, :, dy:dy + height, dx:dx + width]
                                  for i, (dy, dx) in enumerate(offsets)])
        return [images, labels]


def load_fashion_mnist(data_dir: str | Path | None = None) -> ImageSplits:
    """Load the 60k/10k Fashion-MNIST images from the IDX files (see :mod:`.sources`)."""
    folder = find_fashion_mnist(data_dir)

    def images(name: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(folder / name).copy()).unsqueeze(1)

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(folder / name).astype(np.int64))

    return ImageSplits(images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
                       images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"),
                       FASHION_MNIST_CLASSES)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), split train/test by seed."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return ImageSplits(images[train], labels[train], images[test], labels[test],
                       tuple(str(d) for d in range(10)))


def make_synthetic(num_train: int = 512, num_test: int = 128, shape: tuple[int, int, int] = (1, 28, 28),
                   num_classes: int = 10, seed: int = 0) -> ImageSplits:
    """Random images whose labels follow a fixed random linear rule (so they are learnable)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(num_train + num_test, *shape, generator=generator)
    projection = torch.randn(int(np.prod(shape)), num_classes, generator=generator)
    labels = ((images.flatten(1) - 0.5) @ projection).argmax(1)
    return ImageSplits(images[:num_train], labels[:num_train], images[num_train:],
                       labels[num_train:], tuple(str(c) for c in range(num_classes)))
