"""Shared fixtures. Tests run on CPU with tiny models and shipped or generated data."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def digits():
    """A digits data module (8x8 grey-scale images, 10 classes), set up."""
    from compressor.data import DigitsDataModule

    module = DigitsDataModule(batch_size=64)
    module.setup()
    return module
