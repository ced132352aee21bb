import numpy as np
import pytest

from compressor.data import sources
from compressor.data.datamodules import FashionMNISTDataModule
from compressor.errors import DataNotFoundError

from .test_idx import write_idx


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Fashion-MNIST anywhere: empty Debian folder, empty cache, no $COMPRESSOR_DATA."""
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("COMPRESSOR_DATA", raising=False)
    return tmp_path


def make_fake_fashion_mnist(folder, n_train=30, n_test=10):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_missing_data_error_lists_every_place(nowhere):
    with pytest.raises(DataNotFoundError) as info:
        FashionMNISTDataModule(data_dir=nowhere / "mine")
    message = str(info.value)
    for place in (nowhere / "mine", nowhere / "debian", nowhere / "cache" / "compressor" / "fashion-mnist"):
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "compressor fetch-data" in message


def test_found_through_environment_variable(nowhere, monkeypatch):
    make_fake_fashion_mnist(nowhere / "env" / "fashion-mnist")
    monkeypatch.setenv("COMPRESSOR_DATA", str(nowhere / "env"))
    module = FashionMNISTDataModule(val_size=10)
    module.setup()
    assert len(module.dataset("train")) == 20
    assert len(module.dataset("test")) == 10


def test_explicit_data_dir_wins(nowhere):
    make_fake_fashion_mnist(nowhere / "explicit")
    assert sources.find_fashion_mnist(nowhere / "explicit") == nowhere / "explicit"


def test_ensure_without_apt_or_download_raises(nowhere):
    with pytest.raises(DataNotFoundError, match="not found"):
        sources.ensure_fashion_mnist(allow_apt=False, allow_download=False)


def test_download_failure_leaves_nothing_behind(nowhere):
    target = nowhere / "cache" / "compressor" / "fashion-mnist"
    with pytest.raises(DataNotFoundError, match="Could not download"):
        sources.download_fashion_mnist(target, base_url="http://127.0.0.1:9/")
    assert not any(target.iterdir())
