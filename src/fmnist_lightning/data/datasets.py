"""Fashion-MNIST's images held in memory as uint8, gathered a whole batch at a time; the user's images alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fmnist_lightning.fashion_mnist import NUM_CLASSES


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as the models take them: exactly the study's x / 255.0 (a model may then standardise them)."""
    # v2.ToDtype(scale=True) multiplies by 1/255, 1 ulp off for half the values
    return images.float().div_(255)


class InMemoryImages(Dataset):
    """Images held as one uint8 tensor; a batch is gathered with one indexing op.

    torchvision's FashionMNIST builds a PIL image per sample, which costs more than a LeNet-5 training step;
    ``__getitems__`` lets the DataLoader fetch whole batches (the DataLoader then uses ``unpack_batch`` as collate).
    Augmentation happens later, on the device, a batch at a time (``FashionMNISTDataModule.on_after_batch_transfer``).

    ``to(device)`` moves the images and targets to a device (``--data.on_device``): a batch is then gathered there
    from the sampler's indices, the only per-batch copy, and Lightning's transfer of the batch has nothing to move.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> None:
        self.images = images.unsqueeze(1)  # N×1×28×28 uint8
        self.labels = labels
        # the targets once, not per batch: one-hot float vectors (Keras's to_categorical), smoothed if asked
        self.targets = F.one_hot(labels, NUM_CLASSES).float()
        if label_smoothing:
            self.targets = self.targets * (1 - label_smoothing) + label_smoothing / NUM_CLASSES

    def to(self, device: torch.device | str) -> InMemoryImages:
        """Keeps the images, labels and targets on ``device`` (uint8 images: 47 MB for all of Fashion-MNIST)."""
        self.images, self.labels, self.targets = (t.to(device) for t in (self.images, self.labels, self.targets))
        return self

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        if self.images.is_cuda:  # from pinned memory, without waiting: a plain copy would sync with the GPU's queue
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        images = self.images.index_select(0, index)  # a third of the time of self.images[index] on CPU
        return to_model_input(images), self.targets.index_select(0, index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.__getitems__([index])
        return images[0], targets[0]


class ImageBatch(NamedTuple):
    """A batch of the user's images with the files they came from, which the prediction writer names."""

    images: torch.Tensor
    files: list[str]


class UserImages(Dataset):
    """The user's images (``--data.predict.path``) converted to Fashion-MNIST's format, batched like
    ``InMemoryImages``."""

    def __init__(self, images: torch.Tensor, files: list[str]) -> None:
        self.images = images  # N×1×28×28 uint8
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitems__(self, indices: Sequence[int]) -> ImageBatch:
        images = self.images.index_select(0, torch.as_tensor(indices))
        return ImageBatch(to_model_input(images), [self.files[i] for i in indices])


def unpack_batch(batch: Any) -> Any:
    """Collate for ``InMemoryImages`` and ``UserImages``: their batches arrive already stacked."""
    return batch


def kfold_indices(num_samples: int, num_folds: int, seed: int, shuffle: bool = True) -> list[np.ndarray]:
    """The validation indices of sklearn's ``KFold(num_folds, shuffle=True, random_state=seed)``, or with ``shuffle``
    off of ``KFold(num_folds)`` (contiguous folds in file order; ``seed`` unused).

    Written out so the study's exact folds need no scikit-learn: a RandomState permutation (or the file order) cut
    into ``num_folds`` chunks, the first ``num_samples % num_folds`` one longer.
    """
    order = np.random.RandomState(seed).permutation(num_samples) if shuffle else np.arange(num_samples)
    return np.array_split(order, num_folds)
