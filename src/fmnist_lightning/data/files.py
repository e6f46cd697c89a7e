"""Finding, checking and reading the four Fashion-MNIST files, whatever folder layout and compression they come in.

torchvision reads the IDX format; what it lacks is done here: files found flat or in its ``FashionMNIST/raw/``
layout, ``.gz`` or not, decompressed into a cache instead of beside the user's files, and malformed files turned into
one-line errors instead of its bare asserts.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import URLError

import torch
from torchvision.datasets import FashionMNIST

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.fashion_mnist import NUM_CLASSES
from fmnist_lightning.safe_files import write_atomically

RAW_FILES = tuple(Path(url).stem for url, _ in FashionMNIST.resources)  # train/t10k images/labels, uncompressed
DATA_DIR_HINT = "point --data.data_dir to a folder holding the four Fashion-MNIST files (.gz or uncompressed)"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmnist_lightning"


def find_sources(data_dir: Path) -> dict[str, Path | None]:
    """Each raw file's location in ``data_dir``: uncompressed first, then ``.gz``; flat, then torchvision layout."""
    raw_layout = data_dir / "FashionMNIST" / "raw"
    sources: dict[str, Path | None] = {}
    for name in RAW_FILES:
        candidates = [folder / (name + ext) for ext in ("", ".gz") for folder in (data_dir, raw_layout)]
        sources[name] = next((path for path in candidates if path.is_file()), None)
    return sources


def download(data_dir: Path) -> None:
    """torchvision's download of the four files into ``data_dir``, where any is missing."""
    if all(path is not None for path in find_sources(data_dir).values()):
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            FashionMNIST(data_dir, train=train, download=True)
    except (URLError, RuntimeError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(
            f"could not download Fashion-MNIST into {data_dir}/ ({first_line}); {DATA_DIR_HINT}"
        ) from None


def torchvision_root(data_dir: Path, cache_dir: Path) -> Path:
    """A root where torchvision finds the four uncompressed files in ``FashionMNIST/raw/``.

    torchvision's ``download=False`` only reads uncompressed files in that layout, and ``download=True`` writes
    beside the user's files; so unless ``data_dir`` already is that layout, the files are decompressed (or
    copied) into a cache folder keyed by the sources' paths, sizes and mtimes.
    """
    sources = find_sources(data_dir)
    missing = [name for name, path in sources.items() if path is None]
    if missing:
        raise UserInputError(
            f"Fashion-MNIST not found in {data_dir}/: missing {', '.join(n + '[.gz]' for n in missing)}; "
            f"{DATA_DIR_HINT}, or use --data.files.download true with internet access"
        )
    raw_layout = data_dir / "FashionMNIST" / "raw"
    if all(path == raw_layout / name for name, path in sources.items()):
        return data_dir
    key = hashlib.sha1(
        "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources.values()).encode()
    ).hexdigest()[:16]
    root = cache_dir / key
    for name, source in sources.items():
        target = root / "FashionMNIST" / "raw" / name
        if not target.is_file():
            _materialize(source, target)
    return root


def read_split(data_dir: Path, cache_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training or test images (N×28×28 uint8) and labels, checked: as many labels as images, all in 0–9."""
    root, split = torchvision_root(data_dir, cache_dir), "train" if train else "t10k"
    try:
        dataset = FashionMNIST(root, train=train, download=False)
    except Exception as error:  # torchvision asserts and raises bare errors on malformed IDX files
        raise UserInputError(
            f"cannot read the Fashion-MNIST {split} files from {data_dir}/ "
            f"({type(error).__name__}: {error or 'malformed IDX file'}); replace them with the original files "
            f"or {DATA_DIR_HINT}"
        ) from None
    if len(dataset.data) != len(dataset.targets):
        raise UserInputError(
            f"{data_dir}/{split}-images has {len(dataset.data)} images but {split}-labels has "
            f"{len(dataset.targets)} labels; replace them with the original files or {DATA_DIR_HINT}"
        )
    outside = dataset.targets[(dataset.targets < 0) | (dataset.targets >= NUM_CLASSES)]
    if len(outside):
        raise UserInputError(
            f"{data_dir}/{split}-labels holds {len(outside)} labels outside 0–9 (the first: "
            f"{int(outside[0])}); replace them with the original files or {DATA_DIR_HINT}"
        )
    return dataset.data, dataset.targets


def _materialize(source: Path, target: Path) -> None:
    """Put an uncompressed copy of ``source`` at ``target`` atomically, so concurrent ranks never see half a file."""
    opener: Any = gzip.open if source.suffix == ".gz" else open

    def copy(file: BinaryIO) -> None:
        try:
            with opener(source, "rb") as src:
                shutil.copyfileobj(src, file)
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
            raise UserInputError(
                f"{source} is corrupt or truncated ({error or type(error).__name__}); "
                f"replace it with the original file or {DATA_DIR_HINT}"
            ) from None

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, copy)
    except OSError as error:  # the cache folder, not the source: copy's errors are UserInputErrors
        raise UserInputError(
            f"cannot write the data cache {target.parent} ({error.strerror}); "
            "set --data.files.cache_dir to a writable folder"
        ) from None
