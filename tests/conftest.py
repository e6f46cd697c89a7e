"""Small Fashion-MNIST-format files written by the tests, read through the project's real loading code.

Keras (the parity reference in tests/parity) runs on its PyTorch backend unless KERAS_BACKEND is already set; it
must be chosen before the first ``import keras``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torchvision  # noqa: F401  (before Keras: TensorFlow loaded before torch's triton aborts, LLVM error)

from support import real_data_dir, write_dataset

os.environ.setdefault("KERAS_BACKEND", "torch")


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A flat folder of the four ``.gz`` files: 120 training and 40 test images."""
    folder = tmp_path / "fmnist"
    write_dataset(folder)
    return folder


@pytest.fixture
def make_datamodule(tmp_path: Path) -> Callable:
    from fmnist_lightning import FashionMNISTDataModule

    def make(data_dir: Path, **kwargs) -> FashionMNISTDataModule:
        kwargs.setdefault("download", False)
        module = FashionMNISTDataModule(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), **kwargs)
        module.prepare_data()
        module.setup("fit")
        return module

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--parity-report",
        metavar="PATH",
        help="write the parity checks' measured differences as a Markdown table (docs/parity.md)",
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    folder = real_data_dir()
    if folder is None:
        hint = "set FMNIST_DATA_DIR or put the four .gz files in ../shared/data/fashion-mnist"
        message = f"real Fashion-MNIST not found: {hint}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder
