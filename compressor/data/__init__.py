"""Offline data sets: Fashion-MNIST (IDX files), scikit-learn's digits and synthetic images, as
plain tensors (:mod:`.datasets`) and as LightningDataModules (:mod:`.datamodules`)."""

from compressor.data.datamodules import (
    DATAMODULES,
    ClassificationDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    SyntheticDataModule,
    create_datamodule,
    list_datamodules,
)
from compressor.data.datasets import (
    ImageSplits,
    TensorImageDataset,
    load_digits,
    load_fashion_mnist,
)
from compressor.data.sources import ensure_fashion_mnist, find_fashion_mnist

__all__ = [
    "DATAMODULES", "ClassificationDataModule", "FashionMNISTDataModule", "DigitsDataModule",
    "SyntheticDataModule", "create_datamodule", "list_datamodules",
    "ImageSplits", "TensorImageDataset", "load_fashion_mnist", "load_digits",
    "ensure_fashion_mnist", "find_fashion_mnist",
]
