"""Fashion-MNIST as a LightningDataModule: the study's splits and folds, batches sliced from memory, augmentation
on the device a batch at a time."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import timm.data
import torch
from torch.utils.data import DataLoader, Dataset

from fmnist_lightning.data import files as data_files
from fmnist_lightning.data.augment import build_augmentation
from fmnist_lightning.data.datasets import InMemoryImages, UserImages, kfold_indices, unpack_batch
from fmnist_lightning.data.images import UnreadableImageError, fashion_mnist_pixels, image_files
from fmnist_lightning.data.options import Augmentation, DataFiles, PredictImages, Validation
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.fashion_mnist import CLASS_NAMES, NUM_CLASSES


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST with the study's preprocessing: pixels in [0, 1], one-hot float targets (a model that
    standardises its inputs does so itself: its ``standardize`` option).

    The options of one concern are grouped (``fmnist_lightning.data.options``): ``--data.<group>.<option>`` on the
    command line, ``data: {<group>: {<option>: ...}}`` in YAML, where a group's options left out keep their defaults.

    Args:
        data_dir: Folder with the four original files, ``.gz`` or uncompressed, flat or in torchvision's
            ``FashionMNIST/raw/`` layout. When they are missing and ``files.download`` is on, torchvision downloads
            them here.
        batch_size: Training batch size (evaluation uses ``eval_batch_size``).
        eval_batch_size: Batch size of validation, test and predict.
        validation: Which images validate (``Validation``): ``protocol`` split, test or kfold; ``val_size`` and
            ``split_seed`` of a split; ``num_folds``, ``fold`` and ``kfold_shuffle`` of the study's folds.
        augmentation: What changes the training images and targets (``Augmentation``): ``affine`` (the study's
            warp), ``crop_padding``, ``hflip``, ``erasing``, ``mixup_alpha``, ``cutmix_alpha``, ``label_smoothing``.
        num_workers: DataLoader worker processes (0: batches are sliced in the main process).
        on_device: Keep the training, validation and test images on the trainer's device (its GPU; 47 MB as uint8)
            and gather each batch there: no per-batch work on the host but the sampler's indices, no copy of float
            batches. Lightning's DataLoader and sampler still choose the indices, so the batch order for a seed, DDP
            sharding and mid-epoch resume are those of the host path. Needs ``num_workers: 0`` (workers cannot
            index device tensors).
        files: How ``data_dir``'s files are obtained and read (``DataFiles``): ``download``, ``cache_dir``.
        predict: The user's own images for ``predict`` (``PredictImages``): ``path`` (a file or folder classified
            instead of the test set; unreadable files are skipped and listed in ``unreadable``), ``invert``.

    Checkpoints store the groups as plain dicts (``datamodule_hyper_parameters``), which a weights-only
    ``torch.load`` reads; the typed groups are the attributes of the same names.
    """

    def __init__(
        self,
        data_dir: str = "data/",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        validation: Validation = Validation(),
        augmentation: Augmentation = Augmentation(),
        num_workers: int = 0,
        on_device: bool = False,
        files: DataFiles = DataFiles(),
        predict: PredictImages = PredictImages(),
    ) -> None:
        super().__init__()
        check_options(validation, augmentation, batch_size)
        if on_device and num_workers:
            raise UserInputError(
                f"--data.on_device gathers batches on the device, which DataLoader workers cannot do: set "
                f"--data.num_workers 0 (got {num_workers}) or --data.on_device false"
            )
        self.validation, self.augmentation, self.files, self.predict = validation, augmentation, files, predict
        # save_hyperparameters reads the arguments' local names: rebound as plain dicts, the groups go into
        # checkpoints as values a weights-only load reads (under the CLI, Lightning saves the config's dicts instead)
        validation, augmentation, files, predict = (
            asdict(group) for group in (validation, augmentation, files, predict)
        )
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.cache_dir = (
            Path(self.files.cache_dir).expanduser() if self.files.cache_dir else data_files.default_cache_dir()
        )
        self.classes = CLASS_NAMES
        self.num_classes = NUM_CLASSES
        # listed now, so a wrong path fails before the run's log folder is made
        self.predict_files = image_files(self.predict.path) if self.predict.path else []
        self.unreadable: list[tuple[str, str]] = []  # (file, reason) of the user's images that could not be read
        augment = self.augmentation
        self.image_transform = build_augmentation(augment.crop_padding, augment.hflip, augment.affine, augment.erasing)
        self.mixup = (
            timm.data.Mixup(
                augment.mixup_alpha,
                augment.cutmix_alpha,
                label_smoothing=augment.label_smoothing,
                num_classes=NUM_CLASSES,
            )
            if augment.mixup_alpha or augment.cutmix_alpha
            else None
        )

    def prepare_data(self) -> None:
        if self.predict_files and self.trainer is not None and self.trainer.predicting:
            return  # the user's images need no Fashion-MNIST files
        if self.files.download:
            data_files.download(self.data_dir)
        data_files.torchvision_root(self.data_dir, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_files:
            self._read_user_images()
            return
        if not hasattr(self, "test_set"):
            self._read_fashion_mnist()
        if self.hparams.on_device:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            for dataset in {self.train_set, self.val_set, self.test_set}:  # val_set is test_set with validation: test
                dataset.to(device)

    def _read_fashion_mnist(self) -> None:
        """The test set, and the training set split into training and validation as ``validation`` says."""
        hp = self.validation
        test_images, test_labels = data_files.read_split(self.data_dir, self.cache_dir, train=False)
        self.test_set = InMemoryImages(test_images, test_labels)
        train_images, train_labels = data_files.read_split(self.data_dir, self.cache_dir, train=True)
        if hp.protocol == "test":
            train_index = torch.arange(len(train_labels))
            self.val_set = self.test_set
        else:
            if hp.protocol == "kfold":
                folds = kfold_indices(len(train_labels), hp.num_folds, hp.split_seed, hp.kfold_shuffle)
                val_index = torch.from_numpy(folds[hp.fold])
            else:
                num_val = round(hp.val_size * len(train_labels)) if hp.val_size < 1 else int(hp.val_size)
                if not 0 < num_val < len(train_labels):
                    raise UserInputError(
                        f"--data.validation.val_size {hp.val_size} leaves no training or no validation images out of "
                        f"{len(train_labels)}"
                    )
                order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(hp.split_seed))
                val_index = order[:num_val]
            is_val = torch.zeros(len(train_labels), dtype=torch.bool)
            is_val[val_index] = True
            train_index = (~is_val).nonzero().squeeze(1)
            self.val_set = InMemoryImages(train_images[val_index], train_labels[val_index])
        self.train_set = InMemoryImages(
            train_images[train_index],
            train_labels[train_index],
            label_smoothing=self.augmentation.label_smoothing,
        )

    def _read_user_images(self) -> None:
        """Converts the user's images, skipping (and recording) those that cannot be read."""
        images, paths, self.unreadable = [], [], []
        for path in self.predict_files:
            try:
                images.append(fashion_mnist_pixels(path, self.predict.invert))
                paths.append(str(path))
            except UnreadableImageError as error:
                self.unreadable.append((str(path), error.reason))
        if not images:
            first, reason = self.unreadable[0]
            raise UserInputError(
                f"--data.predict.path {self.predict.path}: none of its {len(self.unreadable)} image files "
                f"could be read ({first}: {reason})"
            )
        self.predict_set = UserImages(torch.stack(images), paths)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augments training batches where they are (on the GPU when training there), one draw per image; mixup and
        cutmix then mix the batch with its reverse (timm: one draw per batch) and mix the targets alike."""
        # a bare tensor is the model's example input on its way to the TensorBoard graph, not a training batch
        if not self.trainer or not self.trainer.training or not isinstance(batch, (tuple, list)):
            return batch
        return self._augment(*batch)

    def _augment(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_transform is not None:
            images = self.image_transform(images)
        if self.mixup is not None:  # timm takes class indices and smooths them itself
            images, targets = self.mixup(images, targets.argmax(dim=1))
        return images, targets

    def _loader(self, dataset: Dataset, batch_size: int, train: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            # timm's mixup pairs each image with another: an even batch
            drop_last=train and self.mixup is not None,
            collate_fn=unpack_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            # pinned host batches copy to the GPU asynchronously; batches already on the device have nothing to pin
            pin_memory=torch.cuda.is_available() and getattr(dataset, "device", torch.device("cpu")).type == "cpu",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_files:
            return self._loader(self.predict_set, self.hparams.eval_batch_size)
        return self.test_dataloader()


def check_options(validation: Validation, augmentation: Augmentation, batch_size: int) -> None:
    """Refuses impossible validation and augmentation settings before anything is read."""
    fold, num_folds = validation.fold, validation.num_folds
    if validation.protocol == "kfold" and not 0 <= fold < num_folds:
        raise UserInputError(f"--data.validation.fold must be in 0..{num_folds - 1} for {num_folds} folds, got {fold}")
    if validation.val_size <= 0:
        raise UserInputError(
            f"--data.validation.val_size must be a fraction in (0, 1) or a count ≥ 1, got {validation.val_size}"
        )
    augment = augmentation
    if not 0 <= augment.label_smoothing < 1:
        raise UserInputError(f"--data.augmentation.label_smoothing must be in [0, 1), got {augment.label_smoothing}")
    if augment.crop_padding < 0 or not 0 <= augment.erasing <= 1 or augment.mixup_alpha < 0 or augment.cutmix_alpha < 0:
        raise UserInputError(
            "--data.augmentation.crop_padding, mixup_alpha and cutmix_alpha must be ≥ 0 and erasing in [0, 1], got "
            f"{augment.crop_padding}, {augment.mixup_alpha}, {augment.cutmix_alpha} and {augment.erasing}"
        )
    if (augment.mixup_alpha or augment.cutmix_alpha) and batch_size % 2:
        raise UserInputError(f"mixup and cutmix pair images: --data.batch_size must be even, got {batch_size}")
