"""Fashion-MNIST as a LightningDataModule: torchvision reads the IDX files, batches are sliced from memory."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.error import URLError

import lightning as L
import numpy as np
import timm.data
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import FashionMNIST
from torchvision.transforms import v2

from fmnist_lightning.augment import build_augmentation
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.images import Invert, UnreadableImageError, fashion_mnist_pixels, image_files

CLASS_NAMES: tuple[str, ...] = tuple(FashionMNIST.classes)
NUM_CLASSES = len(CLASS_NAMES)
# Mean and std of the 60k training pixels scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530
RAW_FILES = tuple(Path(url).stem for url, _ in FashionMNIST.resources)  # train/t10k images/labels, uncompressed
DATA_DIR_HINT = "point --data.data_dir to a folder holding the four Fashion-MNIST files (.gz or uncompressed)"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmnist_lightning"


def normalization(standardize: bool) -> v2.Normalize | None:
    """The standardisation after scaling to [0, 1] (``--data.standardize``), or None."""
    return v2.Normalize([MEAN], [STD]) if standardize else None


def to_model_input(images: torch.Tensor, normalize: v2.Transform | None) -> torch.Tensor:
    """uint8 images as the models see them: exactly the study's x / 255.0, then the optional standardisation."""
    # v2.ToDtype(scale=True) multiplies by 1/255, 1 ulp off for half the values
    images = images.float().div_(255)
    return normalize(images) if normalize else images


class InMemoryImages(Dataset):
    """Images held as one uint8 tensor; a batch is gathered with one indexing op.

    torchvision's FashionMNIST builds a PIL image per sample, which costs more than a LeNet-5 training step;
    ``__getitems__`` lets the DataLoader fetch whole batches (the DataLoader then uses ``unpack_batch`` as collate).
    Augmentation happens later, on the device, a batch at a time (``FashionMNISTDataModule.on_after_batch_transfer``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        normalize: v2.Transform | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.images = images.unsqueeze(1)  # N×1×28×28 uint8
        self.labels = labels
        self.normalize = normalize
        self.label_smoothing = label_smoothing

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        images = self.images.index_select(0, index)  # a third of the time of self.images[index] on CPU
        targets = F.one_hot(self.labels.index_select(0, index), NUM_CLASSES).float()
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / NUM_CLASSES
        return to_model_input(images, self.normalize), targets

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.__getitems__([index])
        return images[0], targets[0]


class ImageBatch(NamedTuple):
    """A batch of the user's images with the files they came from, which the prediction writer names."""

    images: torch.Tensor
    files: list[str]


class UserImages(Dataset):
    """The user's images (``--data.predict_path``) converted to Fashion-MNIST's format, batched like
    ``InMemoryImages``."""

    def __init__(self, images: torch.Tensor, files: list[str], normalize: v2.Transform | None = None) -> None:
        self.images = images  # N×1×28×28 uint8
        self.files = files
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.files)

    def __getitems__(self, indices: Sequence[int]) -> ImageBatch:
        images = self.images.index_select(0, torch.as_tensor(indices))
        return ImageBatch(to_model_input(images, self.normalize), [self.files[i] for i in indices])


def training_batches(batch: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (images, targets) batches of one Lightning training step: a list of them when the model takes
    ``steps_per_execution`` > 1 optimizer steps per training step, else the one batch."""
    return batch if isinstance(batch, list) else [batch]


def unpack_batch(batch: Any) -> Any:
    """Collate for ``InMemoryImages`` and ``UserImages``: their batches arrive already stacked."""
    return batch


def study_folds(num_samples: int, num_folds: int, seed: int) -> list[np.ndarray]:
    """The validation indices of sklearn's ``KFold(num_folds, shuffle=True, random_state=seed)``.

    Written out so the study's exact folds need no scikit-learn: a RandomState permutation cut into
    ``num_folds`` chunks, the first ``num_samples % num_folds`` one longer.
    """
    order = np.random.RandomState(seed).permutation(num_samples)
    return np.array_split(order, num_folds)


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST with the study's preprocessing: pixels in [0, 1], one-hot float targets.

    Args:
        data_dir: Folder with the four original files, ``.gz`` or uncompressed, flat or in torchvision's
            ``FashionMNIST/raw/`` layout. When they are missing and ``download`` is on, torchvision downloads them here.
        batch_size: Training batch size (evaluation uses ``eval_batch_size``).
        validation: ``split`` holds out ``val_size`` of train (seeded by ``split_seed``); ``test`` validates on the
            official test set (what the study's LeNet-5 and EfficientNet notebooks did); ``kfold`` validates on fold
            ``fold`` of the study's ``KFold(num_folds, shuffle=True, random_state=split_seed)``.
        val_size: Fraction (< 1) or number of training images held out with ``validation: split``.
        standardize: Subtract the training mean 0.2860 and divide by the std 0.3530 after scaling to [0, 1].
        augment: The study's random affine augmentation on training images.
        crop_padding: Random crop of each training image after padding it by this many black pixels (0: off).
        hflip: Flip each training image horizontally with probability 0.5.
        erasing: Probability that timm's random erasing blanks a random rectangle of a training image with noise.
        mixup_alpha: timm's mixup of whole training batches with Beta(α, α) weights (0: off).
        cutmix_alpha: timm's cutmix, Beta(α, α) (0: off); with both on, each batch gets one of the two.
        label_smoothing: Keras-style smoothing of the one-hot training targets (validation and test stay one-hot).
        cache_dir: Where ``.gz`` files are decompressed for torchvision; ``data_dir`` itself is never written
            unless a download is needed. Defaults to ``$XDG_CACHE_HOME/fmnist_lightning``.
        predict_path: An image file or a folder of PNG, JPEG, BMP and WebP images that ``predict`` classifies
            instead of the test set, without needing the Fashion-MNIST files; each image is converted to
            Fashion-MNIST's format (``fmnist_lightning.images``). Files that cannot be read are skipped and listed
            in ``unreadable``.
        invert: Negate the user's images (Fashion-MNIST is a light object on black): ``auto`` when their border is
            light, ``true`` or ``false`` for all.
    """

    def __init__(
        self,
        data_dir: str = "data/",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        validation: Literal["split", "test", "kfold"] = "split",
        val_size: int | float = 0.1,
        num_folds: int = 5,
        fold: int = 0,
        split_seed: int = 1,
        standardize: bool = False,
        augment: bool = False,
        crop_padding: int = 0,
        hflip: bool = False,
        erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        num_workers: int = 0,
        download: bool = True,
        cache_dir: str | None = None,
        predict_path: str | None = None,
        invert: Invert = "auto",
    ) -> None:
        super().__init__()
        if validation == "kfold" and not 0 <= fold < num_folds:
            raise UserInputError(f"--data.fold must be in 0..{num_folds - 1} for {num_folds} folds, got {fold}")
        if not 0 <= label_smoothing < 1:
            raise UserInputError(f"--data.label_smoothing must be in [0, 1), got {label_smoothing}")
        if crop_padding < 0 or not 0 <= erasing <= 1 or mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserInputError(
                "--data.crop_padding, mixup_alpha and cutmix_alpha must be ≥ 0 and --data.erasing in [0, 1], got "
                f"{crop_padding}, {mixup_alpha}, {cutmix_alpha} and {erasing}"
            )
        if (mixup_alpha or cutmix_alpha) and batch_size % 2:
            raise UserInputError(f"mixup and cutmix pair images: --data.batch_size must be even, got {batch_size}")
        if val_size <= 0:
            raise UserInputError(f"--data.val_size must be a fraction in (0, 1) or a count ≥ 1, got {val_size}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.classes = CLASS_NAMES
        self.num_classes = NUM_CLASSES
        self.normalize = normalization(standardize)
        # listed now, so a wrong path fails before the run's log folder is made
        self.predict_files = image_files(predict_path) if predict_path else []
        self.unreadable: list[tuple[str, str]] = []  # (file, reason) of the user's images that could not be read
        black = -MEAN / STD if standardize else 0.0
        self.augmentation = build_augmentation(crop_padding, hflip, augment, erasing, fill=black)
        self.mixup = (
            timm.data.Mixup(mixup_alpha, cutmix_alpha, label_smoothing=label_smoothing, num_classes=NUM_CLASSES)
            if mixup_alpha or cutmix_alpha
            else None
        )

    # -- locating the files ------------------------------------------------------------------------------------------
    def _find_sources(self) -> dict[str, Path | None]:
        """Each raw file's location in ``data_dir``: uncompressed first, then ``.gz``; flat, then torchvision layout."""
        raw_layout = self.data_dir / "FashionMNIST" / "raw"
        sources: dict[str, Path | None] = {}
        for name in RAW_FILES:
            candidates = [folder / (name + ext) for ext in ("", ".gz") for folder in (self.data_dir, raw_layout)]
            sources[name] = next((path for path in candidates if path.is_file()), None)
        return sources

    def _torchvision_root(self) -> Path:
        """A root where torchvision finds the four uncompressed files in ``FashionMNIST/raw/``.

        torchvision's ``download=False`` only reads uncompressed files in that layout, and ``download=True`` writes
        beside the user's files; so unless ``data_dir`` already is that layout, the files are decompressed (or
        copied) into a cache folder keyed by the sources' paths, sizes and mtimes.
        """
        sources = self._find_sources()
        missing = [name for name, path in sources.items() if path is None]
        if missing:
            raise UserInputError(
                f"Fashion-MNIST not found in {self.data_dir}/: missing {', '.join(n + '[.gz]' for n in missing)}; "
                f"{DATA_DIR_HINT}, or use --data.download true with internet access"
            )
        raw_layout = self.data_dir / "FashionMNIST" / "raw"
        if all(path == raw_layout / name for name, path in sources.items()):
            return self.data_dir
        key = hashlib.sha1(
            "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources.values()).encode()
        ).hexdigest()[:16]
        root = self.cache_dir / key
        for name, source in sources.items():
            target = root / "FashionMNIST" / "raw" / name
            if not target.is_file():
                _materialize(source, target)
        return root

    def prepare_data(self) -> None:
        if self.predict_files and self.trainer is not None and self.trainer.predicting:
            return  # the user's images need no Fashion-MNIST files
        if any(path is None for path in self._find_sources().values()) and self.hparams.download:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                for train in (True, False):
                    FashionMNIST(self.data_dir, train=train, download=True)
            except (URLError, RuntimeError, OSError) as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise UserInputError(
                    f"could not download Fashion-MNIST into {self.data_dir}/ ({first_line}); {DATA_DIR_HINT}"
                ) from None
        self._torchvision_root()

    # -- loading -----------------------------------------------------------------------------------------------------
    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        root, split = self._torchvision_root(), "train" if train else "t10k"
        try:
            dataset = FashionMNIST(root, train=train, download=False)
        except Exception as error:  # torchvision asserts and raises bare errors on malformed IDX files
            raise UserInputError(
                f"cannot read the Fashion-MNIST {split} files from {self.data_dir}/ "
                f"({type(error).__name__}: {error or 'malformed IDX file'}); replace them with the original files "
                f"or {DATA_DIR_HINT}"
            ) from None
        if len(dataset.data) != len(dataset.targets):
            raise UserInputError(
                f"{self.data_dir}/{split}-images has {len(dataset.data)} images but {split}-labels has "
                f"{len(dataset.targets)} labels; replace them with the original files or {DATA_DIR_HINT}"
            )
        outside = dataset.targets[(dataset.targets < 0) | (dataset.targets >= NUM_CLASSES)]
        if len(outside):
            raise UserInputError(
                f"{self.data_dir}/{split}-labels holds {len(outside)} labels outside 0–9 (the first: "
                f"{int(outside[0])}); replace them with the original files or {DATA_DIR_HINT}"
            )
        return dataset.data, dataset.targets

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_files:
            self._read_user_images()
            return
        if hasattr(self, "test_set"):
            return
        hp = self.hparams
        test_images, test_labels = self._load(train=False)
        self.test_set = InMemoryImages(test_images, test_labels, self.normalize)
        train_images, train_labels = self._load(train=True)
        if hp.validation == "test":
            train_index = torch.arange(len(train_labels))
            self.val_set = self.test_set
        else:
            if hp.validation == "kfold":
                folds = study_folds(len(train_labels), hp.num_folds, hp.split_seed)
                val_index = torch.from_numpy(folds[hp.fold])
            else:
                num_val = round(hp.val_size * len(train_labels)) if hp.val_size < 1 else int(hp.val_size)
                if not 0 < num_val < len(train_labels):
                    raise UserInputError(
                        f"--data.val_size {hp.val_size} leaves no training or no validation images out of "
                        f"{len(train_labels)}"
                    )
                order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(hp.split_seed))
                val_index = order[:num_val]
            is_val = torch.zeros(len(train_labels), dtype=torch.bool)
            is_val[val_index] = True
            train_index = (~is_val).nonzero().squeeze(1)
            self.val_set = InMemoryImages(train_images[val_index], train_labels[val_index], self.normalize)
        self.train_set = InMemoryImages(
            train_images[train_index],
            train_labels[train_index],
            self.normalize,
            label_smoothing=hp.label_smoothing,
        )

    def _read_user_images(self) -> None:
        """Converts the user's images, skipping (and recording) those that cannot be read."""
        images, files, self.unreadable = [], [], []
        for path in self.predict_files:
            try:
                images.append(fashion_mnist_pixels(path, self.hparams.invert))
                files.append(str(path))
            except UnreadableImageError as error:
                self.unreadable.append((str(path), error.reason))
        if not images:
            first, reason = self.unreadable[0]
            raise UserInputError(
                f"--data.predict_path {self.hparams.predict_path}: none of its {len(self.unreadable)} image files "
                f"could be read ({first}: {reason})"
            )
        self.predict_set = UserImages(torch.stack(images), files, self.normalize)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augments training batches where they are (on the GPU when training there), one draw per image; mixup and
        cutmix then mix the batch with its reverse (timm: one draw per batch) and mix the targets alike.

        For a model with ``steps_per_execution`` K > 1 the loader delivers K batches as one and this splits them
        into a list of ``batch_size`` batches, augmented one after another: the batches of K = 1."""
        # a bare tensor is the model's example input on its way to the TensorBoard graph, not a training batch
        if not self.trainer or not self.trainer.training or not isinstance(batch, (tuple, list)):
            return batch
        if self._steps_per_execution() == 1:
            return self._augment(*batch)
        images, targets = batch
        size = self.hparams.batch_size
        batches = zip(images.split(size), targets.split(size), strict=True)
        # the last, short batch of an epoch is dropped with mixup, as the DataLoader drops it with K = 1
        return [self._augment(*pair) for pair in batches if self.mixup is None or len(pair[0]) == size]

    def _steps_per_execution(self) -> int:
        model = self.trainer.lightning_module if self.trainer else None
        return getattr(model, "hparams", {}).get("steps_per_execution", 1)

    def _augment(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augmentation is not None:
            images = self.augmentation(images)
        if self.mixup is not None:  # timm takes class indices and smooths them itself
            images, targets = self.mixup(images, targets.argmax(dim=1))
        return images, targets

    def _loader(self, dataset: Dataset, batch_size: int, train: bool = False, batches_per_item: int = 1) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size * batches_per_item,  # one shuffle either way: the same batches
            shuffle=train,
            # timm's mixup pairs each image with another: an even batch (on_after_batch_transfer drops a short one)
            drop_last=train and self.mixup is not None and batches_per_item == 1,
            collate_fn=unpack_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, True, self._steps_per_execution())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_files:
            return self._loader(self.predict_set, self.hparams.eval_batch_size)
        return self.test_dataloader()


def _materialize(source: Path, target: Path) -> None:
    """Put an uncompressed copy of ``source`` at ``target`` atomically, so concurrent ranks never see half a file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=target.parent, delete=False)  # noqa: SIM115 - closed by the `with` below
    except OSError as error:
        raise UserInputError(
            f"cannot write the data cache {target.parent} ({error.strerror}); set --data.cache_dir to a writable folder"
        ) from None
    opener: Any = gzip.open if source.suffix == ".gz" else open
    try:
        with tmp, opener(source, "rb") as src:
            shutil.copyfileobj(src, tmp)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        Path(tmp.name).unlink()
        raise UserInputError(
            f"{source} is corrupt or truncated ({error or type(error).__name__}); "
            f"replace it with the original file or {DATA_DIR_HINT}"
        ) from None
    os.replace(tmp.name, target)
