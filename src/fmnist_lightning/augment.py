"""Batch augmentation with one random draw per image, on whichever device the batch is on.

torchvision's v2 transforms draw one set of random parameters per call: applied to a batch tensor that is one
rotation for the whole batch (which silently weakens augmentation), applied image by image it is a Python call and a
small warp per image, slower than a LeNet-5 training step. The affine warp here is one ``affine_grid`` +
``grid_sample`` for the whole batch with a matrix per image, so it runs where the batch is (CPU or GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
