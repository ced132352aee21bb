import pytest
import torch

from compressor.data import (
    DigitsDataModule,
    FashionMNISTDataModule,
    SyntheticDataModule,
    create_datamodule,
    find_fashion_mnist,
)
from compressor.errors import ConfigError, UnknownNameError


def test_digits_shapes_and_labels(digits):
    images, labels = next(iter(digits.train_dataloader()))
    assert images.shape == (64, 1, 8, 8) and images.dtype == torch.float32
    assert labels.min() >= 0 and labels.max() < 10
    assert digits.num_classes == 10 and digits.input_shape == (1, 8, 8)
    sizes = {split: len(digits.dataset(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 1238, "val": 200, "test": 359}


def test_split_is_deterministic_by_seed():
    first, second, other = (DigitsDataModule(seed=s) for s in (0, 0, 1))
    for module in (first, second, other):
        module.setup()
    assert torch.equal(first.dataset("val").images, second.dataset("val").images)
    assert not torch.equal(first.dataset("val").images, other.dataset("val").images)


def test_train_and_validation_do_not_overlap(digits):
    train = {tuple(x.flatten().tolist()) for x in digits.dataset("train").images}
    overlap = [x for x in digits.dataset("val").images if tuple(x.flatten().tolist()) in train]
    # digits has a handful of exact duplicate images; a leaking split would share ~200.
    assert len(overlap) < 5


def test_training_set_is_standardised(digits):
    images = digits.dataset("train").images
    assert abs(float(images.mean())) < 1e-4
    assert abs(float(images.std()) - 1.0) < 1e-3


def test_subset_limits_training_samples():
    module = DigitsDataModule(subset=100, eval_subset=50)
    module.setup()
    assert len(module.dataset("train")) == 100
    assert len(module.dataset("val")) == 50 and len(module.dataset("test")) == 50


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_synthetic_shapes(shape):
    module = SyntheticDataModule(input_shape=shape, num_classes=5)
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (32, *shape)
    assert labels.max() < 5
    assert module.example_batch(3).shape == (3, *shape)


def test_augmented_batches_keep_shape_and_labels():
    module = SyntheticDataModule(augment=True, batch_size=16)
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and labels.shape == (16,)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"subset": -3}, "subset"),
    ({"val_size": -1}, "val_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DigitsDataModule(**kwargs)


def test_validation_larger_than_training_set():
    module = DigitsDataModule(val_size=5000)
    with pytest.raises(ConfigError, match="val_size"):
        module.setup()


def test_unknown_data_set_lists_valid_names():
    with pytest.raises(UnknownNameError, match="fashion-mnist, synthetic"):
        create_datamodule("fashion-mnst")


def test_unknown_option_names_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        create_datamodule("digits", batchsize=3)


def test_fashion_mnist_full_data():
    """The real data set as installed by `make test` (Debian package or cache)."""
    find_fashion_mnist()
    module = FashionMNISTDataModule(val_size=5000)
    module.setup()
    assert [len(module.dataset(s)) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    images, labels = next(iter(module.test_dataloader()))
    assert images.shape[1:] == (1, 28, 28)
    assert set(labels.unique().tolist()) <= set(range(10))
    assert module.class_names[9] == "Ankle boot"
