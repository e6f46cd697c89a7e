"""Augmentation: ``study_augmentation()`` as the DataModule applies it, against the study's ``ImageDataGenerator``.

Both draw, per image, Keras's parameters: θ ~ U(±10°), tx ~ U(±0.1 × 28) and ty ~ U(±0.1 × 28) px (floats) and
zooms zx, zy ~ U(0.9, 1.1) independently, and warp with the matrix ``apply_affine_transform`` composes (scipy's
output → input map c + R(θ)·(t + Z·(o − c)) about c = (13.5, 13.5): zoom z shrinks the image by 1/z, ``tx`` moves
it by −tx along x), bilinearly, the nearest edge pixel as fill. Ours is one ``affine_grid`` + ``grid_sample`` of the
batch (``padding_mode='border'``, which for bilinear sampling is scipy's mode 'nearest') with a matrix per image.

Given the same parameters (Keras's draws for 200 real training images) the two warps agree to 2.8e-6 in float32
(seeds 0–19, other images each: 2.5e-6–3.5e-6; sampling coordinates in float32, ~2e-6 px, times pixel steps of up
to 1) and to 8e-15 in float64, also for 20×28 and 28×20 images (Keras puts h/2 − 0.5 on x), so the float32
tolerance WARP_TOLERANCE = 2e-5 is about 6× the largest measured error.

The statistical test compares the per-image mean |augmented − original| of the first 10,000 training images by a
two-sample Kolmogorov–Smirnov test at α = 0.01 (D ≤ 0.0230), asserted against Keras's own settings (fill
'nearest'). Over seeds 0–19 (ours and Keras each drawing from that seed; 162 s): ours against Keras D 0.0072–0.0164
(none rejected; seed 0: 0.0105). The negative controls, ours with one range widened, were rejected for all 20
seeds: rotation ±15° (D 0.049–0.068), shifts ±15 % (0.215–0.239), zoom 0.8–1.2 (0.047–0.069; 0.85–1.15 for only 17).
Keras with black fill (fill_mode 'constant') against its default was rejected for 19 of 20 (0.021–0.041), so the
test also tells the fills apart. With 2,000 images, as before, rotation ±15° was rejected for only 15 of 20 seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from keras.src.legacy.preprocessing.image import ImageDataGenerator, apply_affine_transform
from scipy.stats import ks_2samp

from fmnist_lightning.data.augment import ImageDataGeneratorAffine, image_data_generator_warp, study_augmentation
from fmnist_lightning.data.datasets import InMemoryImages
from support import study_arrays

STUDY = {"rotation_range": 10, "width_shift_range": 0.1, "height_shift_range": 0.1, "zoom_range": 0.1}
PARAMETERS = ("theta", "tx", "ty", "zx", "zy")  # Keras's names; ImageDataGeneratorAffine.draw's columns
NUM_DRAWS = 20_000
NUM_IMAGES = 10_000
NUM_WARPED = 200
WARP_TOLERANCE = 2e-5
ALPHA = 0.01
SEED = 0


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """A 28×28 warp is too small for a thread pool: two threads on two busy cores spin for milliseconds per image."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(real_data) -> np.ndarray:
    """The first training images as the study fed them to Keras: float32 N×28×28×1 in [0, 1]."""
    return study_arrays(real_data, "train")[0][:NUM_IMAGES]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global generators ours (torch) and ImageDataGenerator (NumPy) draw from; restore them."""
    state = np.random.get_state()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def keras_draws(num: int, seed: int, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """``get_random_transform``'s theta, tx, ty, zx, zy for ``num`` images: num×5."""
    generator = ImageDataGenerator(**STUDY)
    with seeded(seed):
        draws = [generator.get_random_transform((*shape, 1)) for _ in range(num)]
    return np.array([[draw[name] for name in PARAMETERS] for draw in draws])


def our_draws(num: int, seed: int) -> np.ndarray:
    """The same, as the DataModule's augmentation draws them for a batch."""
    with seeded(seed):
        return study_augmentation().draw(torch.zeros(num, 1, 28, 28)).double().numpy()


def keras_warp(image: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Keras's warp of one H×W×1 image, called as ``ImageDataGenerator.apply_transform`` calls it."""
    theta, tx, ty, zx, zy = params
    return apply_affine_transform(image, theta, tx, ty, 0, zx, zy, row_axis=0, col_axis=1, channel_axis=2, order=1)


def our_warp(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    columns = torch.from_numpy(params).to(batch.dtype).unbind(1)
    return image_data_generator_warp(batch, *columns).permute(0, 2, 3, 1).numpy()


def test_parameter_ranges_match_image_data_generator(parity):
    keras, ours = keras_draws(NUM_DRAWS, SEED), our_draws(NUM_DRAWS, SEED)

    def endpoints(values: np.ndarray) -> np.ndarray:
        return np.array([values.min(), values.max()])

    def endpoint_gap(column: int) -> float:
        return np.abs(endpoints(ours[:, column]) - endpoints(keras[:, column])).max()

    # rotation: both U(−10°, 10°)
    assert np.abs(ours[:, 0]).max() <= 10 and np.abs(keras[:, 0]).max() <= 10
    parity(
        "DataModule", "augmentation: rotation range (°), max |ours − Keras| over the endpoints", endpoint_gap(0), 0.01
    )

    # shift: both U(−2.8, 2.8) px (0.1 × 28) on each axis, continuous
    assert np.abs(ours[:, 1:3]).max() <= 2.8 and np.abs(keras[:, 1:3]).max() <= 2.8
    for axis, column in (("tx", 1), ("ty", 2)):
        gap = endpoint_gap(column)
        parity("DataModule", f"augmentation: shift {axis} range (px), max |ours − Keras| over the endpoints", gap, 0.01)
    whole = np.mean(ours[:, 1:3] == np.rint(ours[:, 1:3]))
    parity("DataModule", "augmentation: fraction of whole-pixel shifts, ours (continuous: 0)", whole, 0.0)

    # zoom: the same parameter (the image scales by 1/z), drawn per axis
    assert ours[:, 3:].min() >= 0.9 and ours[:, 3:].max() <= 1.1
    assert keras[:, 3:].min() >= 0.9 and keras[:, 3:].max() <= 1.1
    for axis, column in (("zx", 3), ("zy", 4)):
        gap = endpoint_gap(column)
        parity("DataModule", f"augmentation: zoom {axis} range, max |ours − Keras| over the endpoints", gap, 0.001)
    scale = np.abs(endpoints(1 / ours[:, 3:]) - endpoints(1 / keras[:, 3:])).max()
    parity("DataModule", "augmentation: image scale 1/zoom range, max |ours − Keras| over the endpoints", scale, 0.001)
    # x and y zoom independent: mean |zx/zy − 1| is 0.067 for both (its standard error 3.5e-4 each)
    anisotropy = np.abs(np.abs(ours[:, 3] / ours[:, 4] - 1).mean() - np.abs(keras[:, 3] / keras[:, 4] - 1).mean())
    parity("DataModule", "augmentation: mean |zx / zy − 1|, |ours − Keras|", anisotropy, 0.003)
    # the image's displacement, shift / zoom (scipy shifts in input pixels)
    displacement = np.abs(np.abs(ours[:, 1:3] / ours[:, 3:]).mean() - np.abs(keras[:, 1:3] / keras[:, 3:]).mean())
    parity("DataModule", "augmentation: mean |image displacement| (px), |ours − Keras|", displacement, 0.04)


def test_same_parameters_give_the_same_warp(images, parity):
    """Keras's own draws, warped by Keras's ``apply_affine_transform`` and by ours: every pixel alike."""
    params, chosen = keras_draws(NUM_WARPED, SEED), images[:NUM_WARPED]

    def gap(images: np.ndarray, params: np.ndarray, ours: np.ndarray | None = None) -> float:
        theirs = np.stack([keras_warp(image, p) for image, p in zip(images, params, strict=True)])
        return np.abs((our_warp(images, params) if ours is None else ours) - theirs).max()

    label = f"augmentation: warp, Keras's parameters, max |ours − Keras| ({NUM_WARPED} images)"
    parity("DataModule", label, gap(chosen, params), WARP_TOLERANCE)
    parity("DataModule", "augmentation: the same in float64", gap(chosen.astype(np.float64), params), 1e-12)
    # non-square images: Keras's centre (h/2 − 0.5 on x) and axes, which square images cannot tell apart
    noise = np.random.default_rng(SEED)
    for shape in ((20, 28), (28, 20)):
        label = f"augmentation: the same in float64, {shape[0]}×{shape[1]} noise images"
        parity("DataModule", label, gap(noise.random((20, *shape, 1)), keras_draws(20, SEED, shape)), 1e-12)
    # what the comparison shows when a convention is wrong: zoom read as the image's scale (1/z)
    inverted = params.copy()
    inverted[:, 3:] = 1 / params[:, 3:]
    parity(
        "DataModule", "augmentation: the same, ours given 1/zoom", gap(chosen, params, our_warp(chosen, inverted)), None
    )


def pixel_change_ours(images: np.ndarray, transform: ImageDataGeneratorAffine, seed: int) -> np.ndarray:
    """Per image, mean |augmented − original|: uint8 pixels through ``InMemoryImages``, then one draw per image on
    the batch, as the DataModule augments training batches."""
    pixels = torch.from_numpy(np.rint(images[..., 0] * 255).astype(np.uint8))
    batch, _ = InMemoryImages(pixels, torch.zeros(len(pixels), dtype=torch.long)).__getitems__(range(len(pixels)))
    with seeded(seed):
        augmented = transform(batch)
    return np.abs(augmented[:, 0].numpy() - images[..., 0]).mean(axis=(1, 2))


def pixel_change_keras(images: np.ndarray, seed: int, **options) -> np.ndarray:
    """Per image, mean |augmented − original| by ``ImageDataGenerator.random_transform`` (what its iterator calls)."""
    generator = ImageDataGenerator(**STUDY, **options)
    with seeded(seed):
        augmented = np.stack([generator.random_transform(image) for image in images])
    return np.abs(augmented - images).mean(axis=(1, 2, 3))


def ks_critical(num: int, alpha: float = ALPHA) -> float:
    """The D above which a two-sample Kolmogorov–Smirnov test of ``num`` against ``num`` rejects at ``alpha``
    (asymptotic; at these sizes it agrees with ks_2samp's exact p-values)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(2 / num)


@pytest.fixture(scope="module")
def keras_change(images) -> np.ndarray:
    """Keras's pixel change with the study's settings (fill 'nearest', its default)."""
    return pixel_change_keras(images, SEED)


def test_pixel_change_distribution_matches_keras(images, keras_change, parity):
    ours = pixel_change_ours(images, study_augmentation(), SEED)
    parity(
        "DataModule",
        f"augmentation: pixel change, KS D vs Keras fill 'nearest' ({len(images)} images)",
        ks_2samp(ours, keras_change).statistic,
        ks_critical(len(images)),
    )


WRONG = [
    pytest.param("rotation ±15°", {**STUDY, "rotation_range": 15}, id="rotation15"),
    pytest.param("shift ±15 %", {**STUDY, "width_shift_range": 0.15, "height_shift_range": 0.15}, id="shift15"),
    pytest.param("zoom 0.8–1.2", {**STUDY, "zoom_range": 0.2}, id="zoom20"),
]


@pytest.mark.parametrize(("name", "ranges"), WRONG)
def test_pixel_change_test_rejects_other_ranges(images, keras_change, parity, name, ranges):
    """Negative control: the same test, with one range widened in place of ours, must reject it."""
    statistic = ks_2samp(pixel_change_ours(images, ImageDataGeneratorAffine(**ranges), SEED), keras_change).statistic
    parity(
        "DataModule", f"augmentation: negative control {name}, KS D vs Keras (must exceed the bound)", statistic, None
    )
    assert statistic > ks_critical(len(images))
