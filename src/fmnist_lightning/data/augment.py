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

    Parameterised as torchvision's ``v2.functional.affine(image, angle, translate, scale, shear=0)``, bilinear,
    for N×C×H×W floats; ``angle``, ``scale``: N, ``translate``: N×2. Pixels from outside the image take the value
    ``fill``. Used for the random crop's whole-pixel shifts (the study's warp is ``image_data_generator_warp``).
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


def image_data_generator_warp(
    images: torch.Tensor,
    theta: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    zx: torch.Tensor,
    zy: torch.Tensor,
) -> torch.Tensor:
    """Keras's ``apply_affine_transform(x, theta, tx, ty, zx=zx, zy=zy)`` (shear 0, ``order=1``, fill_mode
    'nearest', as ``ImageDataGenerator.apply_transform`` calls it) for N×C×H×W floats, its parameters N each.

    Keras composes, in pixel coordinates (x: column, y: row), the map from each output pixel to the input point that
    scipy's ``affine_transform`` samples: in = c + R(theta)·(t + Z·(out − c)) with R(θ) = [[cos θ, −sin θ], [sin θ,
    cos θ]], t = (tx, ty) (so ``tx`` moves the image by −tx along x) and Z = diag(zx, zy) (so zoom z > 1 shrinks the
    image by 1/z), about its centre c = (h/2 − 0.5, w/2 − 0.5) — h for x, as Keras writes it: the pixel centre of a
    square image. ``affine_grid`` (``align_corners=False``) wants the same map in coordinates normalised to [−1, 1]:
    pixel p = (w/2 − 0.5, h/2 − 0.5) + D·u with D = diag(w/2, h/2). Bilinear sampling with ``padding_mode='border'``
    clamps points outside to the edge, which is scipy's ``order=1`` with mode 'nearest' (the edge pixel repeated).
    """
    _, _, height, width = images.shape
    radians = torch.deg2rad(theta.to(images.dtype))
    cos, sin = torch.cos(radians), torch.sin(radians)
    zx, zy, tx, ty = (value.to(images.dtype) for value in (zx, zy, tx, ty))
    # R·Z conjugated by D; the offset D⁻¹·(R·t + (I − R·Z)·(δ, −δ)), where (δ, −δ) with δ = (h − w)/2 is Keras's
    # centre less affine_grid's (zero for square images). Python scalars only: no host-to-device copy, no sync.
    gap = (height - width) / 2
    x_offset = cos * tx - sin * ty + gap * (1 - cos * zx - sin * zy)
    y_offset = sin * tx + cos * ty - gap * (sin * zx + 1 - cos * zy)
    theta_grid = torch.stack(
        [
            torch.stack([cos * zx, -sin * zy * (height / width), x_offset * (2 / width)], dim=1),
            torch.stack([sin * zx * (width / height), cos * zy, y_offset * (2 / height)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta_grid, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ImageDataGeneratorAffine(nn.Module):
    """``ImageDataGenerator(rotation_range, width_shift_range, height_shift_range, zoom_range)``'s random affine
    warp, its parameters drawn per image as ``get_random_transform`` draws them, warped as ``apply_transform`` does.

    Per image: theta ~ U(±rotation_range) degrees; tx ~ U(±height_shift_range)·h and ty ~ U(±width_shift_range)·w
    pixels, continuous (Keras draws ``tx`` from the height range and applies it along x: the same for a square image
    and equal ranges); zx, zy ~ U(1 − zoom_range, 1 + zoom_range) independently. The fill is 'nearest' (Keras's
    default): the edge pixel repeated, on [0, 1] pixels before any standardisation.
    """

    def __init__(
        self,
        rotation_range: float = 10.0,
        width_shift_range: float = 0.1,
        height_shift_range: float = 0.1,
        zoom_range: float = 0.1,
    ) -> None:
        super().__init__()
        if min(rotation_range, width_shift_range, height_shift_range) < 0 or not 0 <= zoom_range < 1:
            raise ValueError(
                "ImageDataGeneratorAffine needs ranges ≥ 0 and a zoom range in [0, 1), got "
                f"{rotation_range}, {width_shift_range}, {height_shift_range}, {zoom_range}"
            )
        self.rotation_range, self.zoom_range = rotation_range, zoom_range
        self.width_shift_range, self.height_shift_range = width_shift_range, height_shift_range

    def draw(self, images: torch.Tensor) -> torch.Tensor:
        """Per image, Keras's parameters theta (degrees), tx, ty (pixels), zx, zy: N×5, uniform in the ranges."""
        count, (height, width) = len(images), images.shape[-2:]
        uniform = torch.rand(count, 5, device=images.device, dtype=images.dtype) * 2 - 1  # U(−1, 1)
        theta, tx, ty, zx, zy = uniform.unbind(1)
        tx, ty = tx * (self.height_shift_range * height), ty * (self.width_shift_range * width)  # Keras's axes
        zx, zy = 1 + zx * self.zoom_range, 1 + zy * self.zoom_range
        return torch.stack([theta * self.rotation_range, tx, ty, zx, zy], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return image_data_generator_warp(images, *self.draw(images).unbind(1))

    def extra_repr(self) -> str:
        return (
            f"rotation_range={self.rotation_range}, width_shift_range={self.width_shift_range}, "
            f"height_shift_range={self.height_shift_range}, zoom_range={self.zoom_range}"
        )


def study_augmentation() -> ImageDataGeneratorAffine:
    """The study's ``ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
    zoom_range=0.1)``: rotation ±10°, shifts ±10 % of the size, zoom 0.9–1.1 per axis, the nearest edge pixel as fill
    (tests/parity/test_augmentation_parity.py)."""
    return ImageDataGeneratorAffine(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1)


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
    crop brings in from outside the image is black (0), Fashion-MNIST's background, what the warp brings in is the
    nearest edge pixel, as Keras's ``ImageDataGenerator`` fills."""
    steps = [
        RandomCrop(crop_padding) if crop_padding else None,
        RandomHorizontalFlip() if hflip else None,
        study_augmentation() if affine else None,
        RandomErasing(erasing) if erasing else None,
    ]
    steps = [step for step in steps if step is not None]
    return nn.Sequential(*steps) if steps else None
