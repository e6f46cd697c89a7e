"""Fashion-MNIST-format files for the tests, and where the real data and the repository are.

A module of its own (not conftest) so test modules in any folder can import it by a name no other file shares.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000080N, big-endian int32 sizes, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_split(num: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first two pixels encode a sample id (so tests can tell which image went where)."""
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(num, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + num)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    labels = (np.arange(num) % 10).astype(np.uint8)
    return images, labels


def sample_ids(images) -> np.ndarray:
    flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1]


def write_dataset(
    folder: Path, num_train: int = 120, num_test: int = 40, compress: bool = True, layout: str = "flat"
) -> dict:
    """Write the four files; return the arrays written. ``layout`` is ``flat`` or ``torchvision``."""
    target = folder if layout == "flat" else folder / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, num, offset in (("train", num_train, 0), ("test", num_test, 10_000)):
        arrays[split, "images"], arrays[split, "labels"] = synthetic_split(num, offset)
    for key, name in FILES.items():
        data = idx_bytes(arrays[key])
        if compress:
            (target / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (target / name).write_bytes(data)
    return arrays


def real_data_dir() -> Path | None:
    """The real Fashion-MNIST folder: ``$FMNIST_DATA_DIR``, else ``../shared/data/fashion-mnist`` beside the repo."""
    folder = Path(os.environ.get("FMNIST_DATA_DIR", REPO.parent / "shared" / "data" / "fashion-mnist"))
    return folder if (folder / "train-images-idx3-ubyte.gz").is_file() else None


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file as an array of the shape its header gives."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def study_arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The study's inputs, read as its notebooks did: ``x / 255.0`` as float32 N×28×28×1, and the labels."""
    images = read_idx(folder / f"{FILES[split, 'images']}.gz")
    return (images[..., None] / 255.0).astype(np.float32), read_idx(folder / f"{FILES[split, 'labels']}.gz")


def error_line(stderr: str) -> str:
    """The single ``error: …`` line of a command's stderr (Lightning's log lines may surround it); no traceback."""
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


def write_checkpoint(model, path: Path, class_path: str | None = None) -> Path:
    """The parts of a fit's checkpoint that ``test``, ``predict``, ``export`` and ``load`` read: weights, the model's
    class and hyperparameters as LightningCLI records them, with the instantiator that lets Lightning build that
    class. ``class_path`` defaults to the model's public one (``fmnist_lightning.models.<Class>``)."""
    import lightning
    import torch

    from fmnist_lightning.runs.checkpoints import INSTANTIATOR

    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": model.state_dict(),
            "hparams_name": "kwargs",
            "hyper_parameters": {
                "_class_path": class_path or f"fmnist_lightning.models.{type(model).__name__}",
                "_instantiator": INSTANTIATOR,
                **model.hparams,
            },
        },
        path,
    )
    return path


def gpu_env() -> dict[str, str]:
    """The environment of a process that may use the GPUs that tests/conftest.py hides from the suite's own."""
    env = dict(os.environ)
    visible = env.pop("FMNIST_VISIBLE_GPUS", "all")
    if visible == "all":
        env.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


def gpu_available() -> bool:
    """Whether a process with ``gpu_env`` sees a CUDA GPU."""
    probe = [sys.executable, "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"]
    return subprocess.run(probe, env=gpu_env(), capture_output=True).returncode == 0


def run_in_process(args: list[str], cwd: Path, monkeypatch, cache_in_cwd: bool = True) -> int:
    """``python -m fmnist_lightning ARGS`` run in cwd inside the test's own process: the exit status. For tests that
    need only the command's outcome: a new process would spend ~6 s importing torch and Lightning, and proves
    nothing more (tests that need a process of their own, for signals, imports or output, keep one). The data cache
    goes to cwd/cache, as ``test_cli.cli`` puts it, unless ``cache_in_cwd`` is false (the session's, conftest's)."""
    from fmnist_lightning.commands.main import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.argv", ["fmnist"])  # LightningCLI warns when pytest's own arguments are there
    if cache_in_cwd:
        monkeypatch.setenv("XDG_CACHE_HOME", str(cwd / "cache"))
    environment = dict(os.environ)
    try:
        return main(args)
    except SystemExit as stop:  # jsonargparse's own exit on a bad argument
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        # as a process of its own would: Lightning's DDP sets MASTER_ADDR and MASTER_PORT, and a later subprocess
        # of the test's worker would inherit that port (tests/test_ddp.py's launches then failed with EADDRINUSE)
        os.environ.clear()
        os.environ.update(environment)


def cli_in_process(
    args: tuple[str, ...] | list[str], cwd: Path, monkeypatch, capsys, cache_in_cwd: bool = True
) -> subprocess.CompletedProcess:
    """``run_in_process`` with what the command printed, shaped as ``subprocess.run``'s result, for tests that read
    a command's output or its one-line error but need no process of its own."""
    capsys.readouterr()  # what the test printed before
    code = run_in_process(list(args), cwd, monkeypatch, cache_in_cwd)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)
