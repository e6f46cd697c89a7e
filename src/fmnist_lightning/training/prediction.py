"""Classes of users' images from a trained model: ``model.predict_images(files)`` and what it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from PIL import Image

from fmnist_lightning.data.datasets import to_model_input
from fmnist_lightning.data.images import ImageSource, Invert, fashion_mnist_pixels
from fmnist_lightning.fashion_mnist import CLASS_NAMES


@dataclass(frozen=True)
class Prediction:
    """An image's most probable class and its probability, and the three most probable classes."""

    class_index: int
    class_name: str
    probability: float
    top3: tuple[tuple[str, float], ...]

    def top3_text(self) -> str:
        """E.g. ``Shirt 0.61; T-shirt/top 0.22; Pullover 0.09``."""
        return "; ".join(f"{name} {probability:.2f}" for name, probability in self.top3)


def rank_classes(probabilities: torch.Tensor) -> list[Prediction]:
    """One ``Prediction`` per row of an N×10 tensor of class probabilities."""
    top = probabilities.detach().cpu().topk(3, dim=1)
    predictions = []
    for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        top3 = tuple((CLASS_NAMES[index], value) for index, value in zip(indices, values, strict=True))
        predictions.append(Prediction(indices[0], CLASS_NAMES[indices[0]], values[0], top3))
    return predictions


def predict_images(
    model: L.LightningModule, images: Sequence[ImageSource] | ImageSource, invert: Invert = "auto"
) -> list[Prediction]:
    """Classes of image files or PIL images, converted as ``predict --data.predict.path`` converts them
    (``fmnist_lightning.data.images``); in eval mode whatever the model's mode.

    Raises ``UnreadableImageError`` (a ``UserInputError``) naming the first image that cannot be read.
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if not images:
        return []
    batch = to_model_input(torch.stack([fashion_mnist_pixels(image, invert) for image in images])).to(model.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            probabilities = model.predict_step(batch, 0)
    finally:
        model.train(was_training)
    return rank_classes(probabilities)
