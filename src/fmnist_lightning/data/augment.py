"""Batch augmentation with one random draw per image, on whichever device the batch is on.

torchvision's v2 transforms draw one set of random parameters per call: applied to a batch tensor that is one
rotation (one crop, one flip) for the whole batch, which silently weakens augmentation; applied image by image it is
a Python call and a small warp per image, slower than a LeNet-5 training step. The affine warp and crop here are one
``affine_grid`` + ``grid_sample`` for the whole batch with a matrix per image, the flip one ``torch.where``, so they
run where the batch is (CPU or GPU). Random erasing and mixup/cutmix are timm's, which already draw per image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing as TimmRandomErasing
from torch import nn

from fmnist_lightning.fashion_mnist import MEAN, STD


def affine_warp(
    images: torch.Tensor, angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor, fill: float = 0.0
) -> torch.Tensor:
    """Rotate by ``angle`` degrees, scale about the centre and shift by ``translate`` pixels (x, y), one per image.

    The same geometry as torchvision's ``v2.functional.affine(image, angle, translate, scale, shear=0)`` with
    bilinear interpolation, for N×C×H×W floats; ``angle``, ``scale``: N, ``translate``: N×2. Pixels from outside
    the image take the value ``fill``.
    """
    _, _, height, width = images.shape
    radians = torch.deg2rad(angle.to(images.dtype))
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    # The output→input map in pixel units about the centre is (1/s)·R(−angle)·(q − t); affine_grid wants it in
    # coordinates normalised to [−1, 1] on each axis, i.e. conjugated by diag(W/2, H/2).
    aspect = height / width
    theta = torch.stack(
        [
            torch.stack([cos, sin * aspect, -(cos * translate[:, 0] + sin * translate[:, 1]) * 2 / width], dim=1),
            torch.stack([-sin / aspect, cos, (sin * translate[:, 0] - cos * translate[:, 1]) * 2 / height], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


class RandomAffine(nn.Module):
    """torchvision's ``RandomAffine(degrees, translate, scale)`` with its parameters drawn per image.

    Shifts are drawn continuously, as Keras's ``ImageDataGenerator`` does (torchvision rounds them to whole pixels).
    """

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        if degrees < 0 or translate < 0 or not 0 < scale[0] <= scale[1]:
            raise ValueError(
                f"RandomAffine needs degrees ≥ 0, translate ≥ 0 and 0 < scale[0] ≤ scale[1], "
                f"got {degrees}, {translate}, {scale}"
            )
        self.degrees, self.translate, self.scale, self.fill = degrees, translate, scale, fill

    def draw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: angle (degrees), shift (x, y pixels) and scale, uniform in the ranges."""
        count, (height, width) = len(images), images.shape[-2:]
        uniform = torch.rand(count, 4, device=images.device, dtype=images.dtype) * 2 - 1  # U(−1, 1)
        angle = uniform[:, 0] * self.degrees
        translate = uniform[:, 1:3] * self.translate * torch.tensor([width, height], device=images.device)
        low, high = self.scale
        scale = (uniform[:, 3] + 1) / 2 * (high - low) + low
        return angle, translate, scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return affine_warp(images, *self.draw(images), fill=self.fill)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, translate={self.translate}, scale={self.scale}, fill={self.fill}"


def study_augmentation(fill: float = 0.0) -> RandomAffine:
    """The study's ImageDataGenerator ranges: rotation ±10°, shifts ±10 %, zoom 0.9–1.1.

    Keras zooms x and y independently and fills with the nearest edge pixel; this zooms both axes alike and fills
    with black, which is Fashion-MNIST's border colour anyway (tests/parity/test_augmentation_parity.py).
    """
    return RandomAffine(degrees=10, translate=0.1, scale=(0.9, 1.1), fill=fill)


class RandomCrop(nn.Module):
    """torchvision's ``RandomCrop(size, padding, fill)`` at the image's own size, with its offset drawn per image.

    Pads by ``padding`` pixels of ``fill`` on every side and crops back at a random whole-pixel offset: a shift by
    −padding…padding pixels on each axis (exact: ``grid_sample`` samples pixel centres).
    """

    def __init__(self, padding: int = 2, fill: float = 0.0) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"RandomCrop needs padding ≥ 0, got {padding}")
        self.padding, self.fill = padding, fill

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        count = len(images)
        shift = torch.randint(-self.padding, self.padding + 1, (count, 2), device=images.device).to(images.dtype)
        no_rotation = torch.zeros(count, device=images.device, dtype=images.dtype)
        return affine_warp(images, no_rotation, shift, no_rotation + 1, fill=self.fill)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, fill={self.fill}"


class RandomHorizontalFlip(nn.Module):
    """torchvision's ``RandomHorizontalFlip(p)`` with the coin tossed per image."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(len(images), 1, 1, 1, device=images.device) < self.p
        return torch.where(flip, images.flip(-1), images)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomErasing(nn.Module):
    """timm's ``RandomErasing`` (per image: whether, where, how large; per-pixel normal noise) on the batch's device.

    timm fixes its device when it is built; this one follows the batch, so the same config runs on CPU and GPU.
    timm's noise is N(0, 1) in standardised units, as its pipelines erase after normalising; the batches here are
    [0, 1] pixels (a model standardises them itself), so the batch is erased in standardised units and brought back:
    the noise is N(0, 1) in the space the model sees after ``standardize``.
    """

    def __init__(self, probability: float = 0.25) -> None:
        super().__init__()
        if not 0 <= probability <= 1:
            raise ValueError(f"RandomErasing needs a probability in [0, 1], got {probability}")
        self.erasing = TimmRandomErasing(probability, mode="pixel", device="cpu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.erasing.device = images.device
        standardised = images.sub(MEAN).div_(STD)
        return self.erasing(standardised).mul_(STD).add_(MEAN)  # timm erases in place: a fresh tensor here

    def extra_repr(self) -> str:
        return f"probability={self.erasing.probability}"


def build_augmentation(
    crop_padding: int, hflip: bool, affine: bool, erasing: float
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The training augmentation, in the usual order: crop, flip, the study's affine warp, then erasing; what the
    crop and the warp bring in from outside the image is black (0), Fashion-MNIST's background."""
    steps = [
        RandomCrop(crop_padding) if crop_padding else None,
        RandomHorizontalFlip() if hflip else None,
        study_augmentation() if affine else None,
        RandomErasing(erasing) if erasing else None,
    ]
    steps = [step for step in steps if step is not None]
    return nn.Sequential(*steps) if steps else None
