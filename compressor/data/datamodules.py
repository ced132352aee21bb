"""LightningDataModules over the in-memory datasets of :mod:`compressor.data.datasets`.

The data sets are small enough to live in memory, so loading runs in the main process
(``num_workers=0`` by default): worker processes would only add start-up cost on small machines.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from compressor.data.datasets import (
    BatchAugment,
    ImageSplits,
    TensorImageDataset,
    load_digits,
    load_fashion_mnist,
    make_synthetic,
)
from compressor.data.sources import find_fashion_mnist
from compressor.errors import ConfigError, UnknownNameError
from compressor.utils.checks import check_int, check_kwargs

__all__ = [
    "ClassificationDataModule",
    "FashionMNISTDataModule",
    "DigitsDataModule",
    "SyntheticDataModule",
    "DATAMODULES",
    "create_datamodule",
    "list_datamodules",
]


class ClassificationDataModule(pl.LightningDataModule):
    """Train / validation / test loaders for an in-memory image classification data set.

    The validation set is carved out of the training set with a seeded permutation, so the split
    is the same in every run with the same ``seed``.

    Args:
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation and test (default: ``max(batch_size, 256)``).
        val_size: Number of training samples held out for validation.
        seed: Seed of the train/validation split and of ``subset`` selection.
        subset: Use only this many training samples (quick runs); ``None`` uses all.
        eval_subset: Use only this many validation and test samples; ``None`` uses all.
        augment: Random crops (2-pixel padding) and horizontal flips on training batches.
        num_workers: DataLoader worker processes (0 = load in the main process).
    """

    def __init__(self, batch_size: int = 128, eval_batch_size: int | None = None, val_size: int = 5000,
                 seed: int = 0, subset: int | None = None, eval_subset: int | None = None,
                 augment: bool = False, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size or max(batch_size, 256),
                                         minimum=1)
        self.val_size = check_int("val_size", val_size, minimum=0)
        self.seed = check_int("seed", seed, minimum=0)
        self.subset = None if subset is None else check_int("subset", subset, minimum=1)
        self.eval_subset = None if eval_subset is None else check_int("eval_subset", eval_subset,
                                                                      minimum=1)
        self.augment = bool(augment)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self._datasets: dict[str, TensorImageDataset] | None = None
        self._splits: ImageSplits | None = None

    @abstractmethod
    def load(self) -> ImageSplits:
        """Load the raw train and test splits."""

    def _raw(self) -> ImageSplits:
        if self._splits is None:
            self._splits = self.load()
        return self._splits

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self._raw().class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Human-readable class names."""
        return self._raw().class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one input image."""
        channels, height, width = self._raw().train_images.shape[1:]
        return int(channels), int(height), int(width)

    def setup(self, stage: str | None = None) -> None:
        """Split, subset and standardise the data (once)."""
        if self._datasets is not None:
            return
        raw = self._raw()
        n_train = len(raw.train_labels)
        if self.val_size >= n_train:
            raise ConfigError(f"`val_size` must be smaller than the {n_train} training samples, "
                              f"got {self.val_size}.")
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n_train, generator=generator)
        val_index, train_index = order[:self.val_size], order[self.val_size:]
        if self.subset is not None:
            train_index = train_index[:self.subset]
        test_index = torch.arange(len(raw.test_labels))
        if self.eval_subset is not None:
            val_index, test_index = val_index[:self.eval_subset], test_index[:self.eval_subset]
        train_images = raw.train_images[train_index]
        scaled = train_images.float() / 255.0 if train_images.dtype == torch.uint8 else train_images
        mean, std = float(scaled.mean()), float(scaled.std().clamp_min(1e-6))
        self._datasets = {
            "train": TensorImageDataset(train_images, raw.train_labels[train_index], mean, std),
            "val": TensorImageDataset(raw.train_images[val_index], raw.train_labels[val_index],
                                      mean, std),
            "test": TensorImageDataset(raw.test_images[test_index], raw.test_labels[test_index],
                                       mean, std),
        }

    def dataset(self, split: str) -> TensorImageDataset:
        """The ``"train"``, ``"val"`` or ``"test"`` dataset (calls :meth:`setup` if needed)."""
        self.setup()
        assert self._datasets is not None
        if split not in self._datasets:
            raise UnknownNameError("split", split, self._datasets)
        return self._datasets[split]

    def example_batch(self, size: int = 2, split: str = "train") -> torch.Tensor:
        """The first ``size`` inputs of a split, e.g. as example inputs for tracing or export."""
        return self.dataset(split).images[:size].clone()

    def _loader(self, split: str, batch_size: int, shuffle: bool, augment: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=batch_size, shuffle=shuffle,
                          collate_fn=BatchAugment() if augment else None,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True, augment=self.augment)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False, augment=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False, augment=False)


class FashionMNISTDataModule(ClassificationDataModule):
    """Fashion-MNIST (60k train / 10k test, 28x28 grey-scale, 10 classes) from the IDX files.

    The files are looked up in ``data_dir``, ``$COMPRESSOR_DATA``, the Debian package folder
    and the user cache (see :mod:`compressor.data.sources`); a missing data set raises
    :class:`~compressor.errors.DataNotFoundError` in the constructor, before any training.

    Args:
        data_dir: Folder holding the four ``*-ubyte.gz`` files (optional).
        augment: Random crops and horizontal flips on training batches (default on).
        **kwargs: See :class:`ClassificationDataModule`.
    """

    def __init__(self, data_dir: str | Path | None = None, augment: bool = True,
                 **kwargs: object) -> None:
        super().__init__(augment=augment, **kwargs)  # type: ignore[arg-type]
        self.data_dir = find_fashion_mnist(data_dir)

    def load(self) -> ImageSplits:
        return load_fashion_mnist(self.data_dir)


class DigitsDataModule(ClassificationDataModule):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes): tiny, for fast tests.

    Args:
        val_size: Held-out validation samples (default 200 of the 1438 training images).
        **kwargs: See :class:`ClassificationDataModule`.
    """

    def __init__(self, val_size: int = 200, batch_size: int = 64, **kwargs: object) -> None:
        super().__init__(val_size=val_size, batch_size=batch_size, **kwargs)  # type: ignore[arg-type]

    def load(self) -> ImageSplits:
        return load_digits(seed=self.seed)


class SyntheticDataModule(ClassificationDataModule):
    """Random images with a learnable labelling rule, of any shape (for shape tests).

    Args:
        num_train: Training samples (validation is carved out of these).
        num_test: Test samples.
        input_shape: ``(C, H, W)`` of each image.
        num_classes: Number of classes.
        **kwargs: See :class:`ClassificationDataModule`.
    """

    def __init__(self, num_train: int = 512, num_test: int = 128,
                 input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                 val_size: int = 64, batch_size: int = 32, **kwargs: object) -> None:
        super().__init__(val_size=val_size, batch_size=batch_size, **kwargs)  # type: ignore[arg-type]
        self.num_train = check_int("num_train", num_train, minimum=2)
        self.num_test = check_int("num_test", num_test, minimum=1)
        self._shape = tuple(check_int("input_shape", int(d), minimum=1) for d in input_shape)
        self._num_classes = check_int("num_classes", num_classes, minimum=2)

    def load(self) -> ImageSplits:
        return make_synthetic(self.num_train, self.num_test, self._shape,  # type: ignore[arg-type]
                              self._num_classes, self.seed)


DATAMODULES: dict[str, type[ClassificationDataModule]] = {
    "fashion-mnist": FashionMNISTDataModule,
    "digits": DigitsDataModule,
    "synthetic": SyntheticDataModule,
}


def list_datamodules() -> list[str]:
    """Names accepted by :func:`create_datamodule`."""
    return sorted(DATAMODULES)


def create_datamodule(name: str, **kwargs: object) -> ClassificationDataModule:
    """Build a data module by name (``fashion-mnist``, ``digits`` or ``synthetic``)."""
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in DATAMODULES:
        raise UnknownNameError("data set", name, DATAMODULES)
    check_kwargs(f"Data set {key!r}", DATAMODULES[key], kwargs)
    return DATAMODULES[key](**kwargs)
