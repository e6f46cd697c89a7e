"""Small Fashion-MNIST-format files written by the tests, read through the project's real loading code.

Keras (the parity reference in tests/parity) runs on its PyTorch backend unless KERAS_BACKEND is already set; it
must be chosen before the first ``import keras``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# The suite runs on the CPU on every machine, as CI runs it: a GPU would change its devices and its numbers (TF32,
# other kernels). The `gpu` tests (tests/test_gpu.py) run their checks in processes that see the GPUs again
# (support.gpu_env). Hidden before anything initialises CUDA.
os.environ.setdefault("FMNIST_VISIBLE_GPUS", os.environ.get("CUDA_VISIBLE_DEVICES", "all"))
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# `make test` runs the suite in two pytest-xdist workers, one a core: each worker, and every process its tests start,
# computes on one thread (tests that time or measure something set their own)
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torchvision  # noqa: F401  (before Keras: TensorFlow loaded before torch's triton aborts, LLVM error)

from support import gpu_available, real_data_dir, write_dataset

os.environ.setdefault("KERAS_BACKEND", "torch")


@pytest.fixture(scope="session", autouse=True)
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data cache's default home for every test and the CLIs they start: each test's data folder is a new
    cache key, and the user's ``~/.cache/fmnist_lightning`` would keep a copy of each from every run."""
    cache_home = tmp_path_factory.mktemp("xdg_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache_home))
        yield cache_home


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A flat folder of the four ``.gz`` files: 120 training and 40 test images."""
    folder = tmp_path / "fmnist"
    write_dataset(folder)
    return folder


@pytest.fixture
def make_datamodule(tmp_path: Path) -> Callable:
    from fmnist_lightning import FashionMNISTDataModule
    from fmnist_lightning.data import DataFiles

    def make(data_dir: Path, download: bool = False, **kwargs) -> FashionMNISTDataModule:
        files = DataFiles(download=download, cache_dir=str(tmp_path / "cache"))
        module = FashionMNISTDataModule(data_dir=str(data_dir), files=files, **kwargs)
        module.prepare_data()
        module.setup("fit")
        return module

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the `gpu` tests where no CUDA GPU is visible (asked once, and only when such a test is collected)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]  # not keywords: a test id may say gpu
    if gpu_tests and not gpu_available():
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


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
