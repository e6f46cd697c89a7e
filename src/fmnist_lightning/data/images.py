"""Users' own images as Fashion-MNIST images: 28×28 grayscale, a light object centred on black.

Fashion-MNIST was made from Zalando's product photos on white (Xiao et al. 2017): the border colour trimmed, the
longer edge resized to 28, the shorter padded to 28 with the object centred, the image negated and made grayscale.
``fashion_mnist_pixels`` repeats those steps on any image Pillow reads, whatever its size and mode:

- the colours become luminance; 16-bit images (``I;16``, ``I``) are scaled from their own darkest to their
  lightest value, since such files often hold 10- or 12-bit data;
- transparent pixels become the background, black in the result: an RGBA cut-out is a product photo whose white
  background was removed, so it is put back on white before the negation;
- ``invert="auto"`` negates images whose border is light (photos of a dark object on a light background, and
  transparent cut-outs); Fashion-MNIST-style images (light on black) stay as they are;
- the object is trimmed to the pixels that differ from the border colour by more than 5 % (Fashion-MNIST's rule),
  resized so its longer side is 28 and padded with the border colour to 28×28. An image that already is 28×28 is
  taken as framed (Fashion-MNIST's own images, saved as files): only inverted if need be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from fmnist_lightning.errors import UserInputError

SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TRIM_TOLERANCE = 0.05  # Fashion-MNIST's trimming distance from the border colour
HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
Invert = Literal["auto"] | bool
ImageSource = str | Path | Image.Image


class UnreadableImageError(UserInputError):
    """An image Pillow cannot decode; predicting a folder skips it and reports ``reason``."""

    def __init__(self, source: ImageSource, reason: str) -> None:
        super().__init__(f"cannot read {source}: {reason}")
        self.reason = reason


def image_files(predict_path: str | Path) -> list[Path]:
    """The images that ``--data.predict.path`` names: a file (read whatever its suffix), or the PNG, JPEG, BMP and
    WebP files of a folder (not of its subfolders), sorted by name."""
    path = Path(predict_path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserInputError(f"--data.predict.path {predict_path}: no such file or folder; pass an image or a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserInputError(
            f"--data.predict.path {predict_path}: the folder holds no {', '.join(IMAGE_SUFFIXES)} files"
        )
    return files


def read_pixels(source: ImageSource) -> tuple[np.ndarray, np.ndarray | None]:
    """Luminance in [0, 1] (H×W float32) of an image file or PIL image, upright as its EXIF says, and its opacity
    in [0, 1] when it has any (RGBA, LA, a palette or colour key with transparency), else None."""
    try:
        if isinstance(source, Image.Image):
            return _luminance_and_opacity(ImageOps.exif_transpose(source))
        with Image.open(source) as image:
            return _luminance_and_opacity(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError… on damaged files
        reason = "not an image Pillow recognises" if isinstance(error, UnidentifiedImageError) else str(error)
        raise UnreadableImageError(source, reason or type(error).__name__) from None


def _luminance_and_opacity(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    if image.mode in HIGH_BIT_DEPTH_MODES:  # Pillow's convert("L") would clip them at 255
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return scaled.astype(np.float32), None
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return _unit(rgba.convert("L")), _unit(rgba.getchannel("A"))
    return _unit(image.convert("L")), None


def _unit(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


def _border(pixels: np.ndarray) -> np.ndarray:
    """The outermost rows and columns."""
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


def fashion_mnist_pixels(source: ImageSource, invert: Invert = "auto") -> torch.Tensor:
    """An image file or PIL image as Fashion-MNIST stores its images: 1×28×28 uint8, a light object on black.

    The result goes through the same ``/ 255`` (and standardisation) as the training images. ``invert``: ``"auto"``
    negates the image when the median of its border is light; ``True`` or ``False`` decide for every image.
    Raises ``UnreadableImageError`` for a file Pillow cannot decode.
    """
    luminance, opacity = read_pixels(source)
    if invert == "auto":  # a transparent border counts as light: cut-outs are photos on white
        on_white = luminance if opacity is None else luminance * opacity + (1 - opacity)
        invert = bool(np.median(_border(on_white)) > 0.5)
    if opacity is not None:  # transparent pixels end up black either way
        background = 1.0 if invert else 0.0
        luminance = luminance * opacity + background * (1 - opacity)
    pixels = 1 - luminance if invert else luminance
    if pixels.shape != (SIZE, SIZE):
        pixels = _frame(pixels)
    return torch.from_numpy(np.ascontiguousarray(pixels)).mul(255).round_().clamp_(0, 255).to(torch.uint8)[None]


def _frame(pixels: np.ndarray) -> np.ndarray:
    """Trimmed to the object, its longer side resized to 28, centred on 28×28 in the border colour."""
    background = float(np.median(_border(pixels)))
    rows, columns = (np.flatnonzero(np.abs(pixels - background).max(axis=axis) > TRIM_TOLERANCE) for axis in (1, 0))
    if len(rows):
        pixels = pixels[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    scale = SIZE / max(pixels.shape)
    height, width = (max(1, round(side * scale)) for side in pixels.shape)  # a 1-pixel line stays 1 pixel
    resized = TF.resize(torch.from_numpy(np.ascontiguousarray(pixels))[None], [height, width], antialias=True)
    left, top = (SIZE - width) // 2, (SIZE - height) // 2
    padding = [left, top, SIZE - width - left, SIZE - height - top]
    return TF.pad(resized, padding, fill=background)[0].numpy()
