"""The DataModule's grouped options, which jsonargparse nests in YAML (``data: {validation: {fold: 1}}``) and on the
command line (``--data.validation.fold 1``); the flat names they had before are in ``fmnist_lightning/old_keys.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fmnist_lightning.data.images import Invert


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


# the flags that choose a k-fold run's held-out fold (cv and sweep set them); their names before, old_keys.py's
FOLD_FLAGS = ("--data.validation", *(f"--data.validation.{key}" for key in ("protocol", "num_folds", "fold")))


def kfold_args(num_folds: int, fold: int) -> list[str]:
    """The command line that validates on fold ``fold`` of ``num_folds``."""
    return [
        "--data.validation.protocol=kfold",
        f"--data.validation.num_folds={num_folds}",
        f"--data.validation.fold={fold}",
    ]
