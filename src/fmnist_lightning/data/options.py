"""The DataModule's grouped options, which jsonargparse nests in YAML (``data: {validation: {fold: 1}}``) and on the
command line (``--data.validation.fold 1``), and the flat names they had before, still read from old run folders
and accepted on the command line with a warning."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fmnist_lightning.data.images import Invert
from fmnist_lightning.errors import UserInputError

PROTOCOLS = ("split", "test", "kfold")


@dataclass(frozen=True)
class Validation:
    """Which images validate a run.

    Args:
        protocol: ``split`` holds out ``val_size`` of train (seeded by ``split_seed``); ``test`` validates on the
            official test set (what the study's LeNet-5 and EfficientNet notebooks did); ``kfold`` validates on fold
            ``fold`` of the study's ``KFold(num_folds, shuffle=kfold_shuffle, random_state=split_seed)``.
        val_size: Fraction (< 1) or number of training images held out with ``protocol: split``.
        num_folds: Number of folds with ``protocol: kfold``.
        fold: The held-out fold with ``protocol: kfold``, 0-based.
        split_seed: Seed of the split's permutation and of the folds' shuffle.
        kfold_shuffle: ``false`` cuts the folds in file order, as scikit-learn's ``KFold(num_folds)`` without
            shuffling does: the folds of the study's grid search (``cv=3`` with one-hot targets).
    """

    protocol: Literal["split", "test", "kfold"] = "split"
    val_size: int | float = 0.1
    num_folds: int = 5
    fold: int = 0
    split_seed: int = 1
    kfold_shuffle: bool = True


@dataclass(frozen=True)
class Augmentation:
    """What changes the training images and targets (validation and test images stay as they are).

    Args:
        affine: The study's random affine warp (Keras's ``ImageDataGenerator``).
        crop_padding: Random crop of each training image after padding it by this many black pixels (0: off).
        hflip: Flip each training image horizontally with probability 0.5.
        erasing: Probability that timm's random erasing blanks a random rectangle of a training image with noise.
        mixup_alpha: timm's mixup of whole training batches with Beta(α, α) weights (0: off).
        cutmix_alpha: timm's cutmix, Beta(α, α) (0: off); with both on, each batch gets one of the two.
        label_smoothing: Keras-style smoothing of the one-hot training targets.
    """

    affine: bool = False
    crop_padding: int = 0
    hflip: bool = False
    erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class DataFiles:
    """How ``data_dir``'s files are obtained and read.

    Args:
        download: Download the four files into ``data_dir`` with torchvision when they are missing.
        cache_dir: Where ``.gz`` files are decompressed for torchvision; ``data_dir`` itself is never written
            unless a download is needed. Defaults to ``$XDG_CACHE_HOME/fmnist_lightning``.
    """

    download: bool = True
    cache_dir: str | None = None


@dataclass(frozen=True)
class PredictImages:
    """The user's own images for ``predict``.

    Args:
        path: An image file or a folder of PNG, JPEG, BMP and WebP images that ``predict`` classifies instead of
            the test set, without needing the Fashion-MNIST files; each image is converted to Fashion-MNIST's
            format (``fmnist_lightning.data.images``). Files that cannot be read are skipped and listed.
        invert: Negate the images (Fashion-MNIST is a light object on black): ``auto`` when their border is light,
            ``true`` or ``false`` for all.
    """

    path: str | None = None
    invert: Invert = "auto"


# the flat data options before they were grouped (issue 38) → where they are now
RENAMED = {
    **{key: f"validation.{key}" for key in ("val_size", "num_folds", "fold", "split_seed", "kfold_shuffle")},
    "validation": "validation.protocol",
    "augment": "augmentation.affine",
    **{key: f"augmentation.{key}" for key in ("crop_padding", "hflip", "erasing", "mixup_alpha", "cutmix_alpha")},
    "label_smoothing": "augmentation.label_smoothing",
    "download": "files.download",
    "cache_dir": "files.cache_dir",
    "predict_path": "predict.path",
    "invert": "predict.invert",
}


# the flags that choose a k-fold run's held-out fold (cv and sweep set them), by their names now and before
FOLD_FLAGS = ("--data.validation", *(f"--data.validation.{key}" for key in ("protocol", "num_folds", "fold")))
FOLD_FLAGS += ("--data.num_folds", "--data.fold")


def kfold_args(num_folds: int, fold: int) -> list[str]:
    """The command line that validates on fold ``fold`` of ``num_folds``."""
    return [
        "--data.validation.protocol=kfold",
        f"--data.validation.num_folds={num_folds}",
        f"--data.validation.fold={fold}",
    ]


def _is_old(key: str, value: Any) -> bool:
    # ``validation`` names the group now; before, it was the protocol's name
    return key in RENAMED and not (key == "validation" and isinstance(value, Mapping))


def regrouped(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``data`` config with its old flat keys moved into their groups (an old run folder's config.yaml), so it
    compares with today's; new keys are kept as they are."""
    grouped: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if not _is_old(key, value):
            grouped[key] = dict(value) if isinstance(value, Mapping) else value
    for key, value in (data or {}).items():
        if _is_old(key, value):
            group, _, option = RENAMED[key].partition(".")
            grouped.setdefault(group, {})[option] = value
    return grouped


def renamed_args(args: list[str]) -> list[str]:
    """The command line with old ``--data.<option>`` flags replaced by their new names, with a warning."""
    renamed = []
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        key = flag.removeprefix("--data.")
        following = value if equals else (args[index + 1] if index + 1 < len(args) else "")
        # ``--data.validation`` with a protocol is the old flag; with a group's values, the new one
        if flag.startswith("--data.") and key in RENAMED and (key != "validation" or following in PROTOCOLS):
            new = f"--data.{RENAMED[key]}"
            warnings.warn(f"{flag} is now {new}", FutureWarning, stacklevel=2)
            arg = new + equals + value
        renamed.append(arg)
    return renamed


def config_file_args(args: list[str]) -> list[str]:
    """The values of ``--config`` on a command line."""
    return [
        arg.removeprefix("--config=") if arg.startswith("--config=") else args[i + 1]
        for i, arg in enumerate(args)
        if arg.startswith("--config=") or (arg in ("--config", "-c") and i + 1 < len(args))
    ]


def upgrade_old_data_keys(args: list[str]) -> list[str]:
    """The command line with old flat ``--data.<option>`` flags renamed (with a warning), after checking that its
    config files use none of the old keys (a one-line error naming the new one)."""
    args = renamed_args(args)
    for path in config_file_args(args):
        try:
            config = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue  # jsonargparse says what is wrong with the file
        refuse_old_keys(config.get("data") if isinstance(config, dict) else None, path)
    return args


def refuse_old_keys(data: Any, where: str) -> None:
    """Names the new key of an old flat ``data`` key in a config file: jsonargparse's own error would only say
    that the key is not accepted."""
    if not isinstance(data, Mapping):
        return
    old = [key for key, value in data.items() if _is_old(key, value)]
    if old:
        moved = ", ".join(f"data.{key} is now data.{RENAMED[key]}" for key in old)
        raise UserInputError(f"{where}: {moved} (the data options are grouped; docs/data.md)")
