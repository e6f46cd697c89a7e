"""Augmentation: ``study_augmentation()`` as the DataModule applies it, against the study's ``ImageDataGenerator``.

Keras draws rotation θ ~ U(±10°), shifts tx, ty ~ U(±2.8 px) (0.1 × 28, floats) and zooms zx, zy ~ U(0.9, 1.1)
independently; ours (one ``affine_grid`` warp of the batch with a matrix per image) draws the angle and the shifts
alike and one scale ~ U(0.9, 1.1) for both axes. Given the same parameters the two warps agree to 3e-6 wherever both
sample inside the image, once Keras's terms are read right: its θ is our −angle, ``tx`` is the horizontal shift,
and scipy maps output to input pixels, so zoom z scales the image by 1/z and moves it by −t/z. The differences that
remain (20,000 draws each, seed 0):

- scale: ours U(0.9, 1.1) against 1/U(0.9, 1.1) ∈ [0.909, 1.111] (mean 1.0034): range endpoints 0.011 apart. Keras's
  x and y scales differ (mean |x/y − 1| 0.067); ours never do. Mean |image displacement| 0.005 px apart.
- fill: Keras repeats the nearest edge pixel, ours fills black (and within a pixel of the edge fades the samples
  towards black, where scipy's constant mode gives black outright). The mean pixel change over the first 2,000
  training images is 0.1293 for ours, 0.1309 for Keras with black fill and 0.1282 with its default 'nearest' fill.

The statistical test compares the per-image mean |augmented − original| of the first 2,000 training images by a
two-sample Kolmogorov–Smirnov test at α = 0.01 (D ≤ 0.0515). Over seeds 0–19: against Keras with black fill D was
0.018–0.045 (none rejected), the spread of ours against itself with another seed (0.015–0.036); against Keras's
default fill 0.018–0.050 (none rejected), reported, not asserted. The negative controls, rotation ±20° or shifts
±20 %, were rejected for all 20 seeds (D 0.072–0.112 and 0.349–0.386); so were rotation ±15° for 10, shifts ±15 %
for 20 and scale 0.8–1.2 for 18.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from keras.src.legacy.preprocessing.image import ImageDataGenerator
from scipy.stats import ks_2samp

from fmnist_lightning.data.augment import RandomAffine, affine_warp, study_augmentation
from fmnist_lightning.data.datasets import InMemoryImages
from support import study_arrays

STUDY = {"rotation_range": 10, "width_shift_range": 0.1, "height_shift_range": 0.1, "zoom_range": 0.1}
NUM_DRAWS = 20_000
NUM_IMAGES = 2_000
NUM_WARPED = 200
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
    """Seed the global generators our RandomAffine (torch) and ImageDataGenerator (NumPy) draw from; restore them."""
    state = np.random.get_state()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def keras_draws(num: int, seed: int) -> list[dict]:
    generator = ImageDataGenerator(**STUDY)
    with seeded(seed):
        return [generator.get_random_transform((28, 28, 1)) for _ in range(num)]


def our_draws(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Angle (°), shift (x, y px) and scale per image, as the DataModule's augmentation draws them for a batch."""
    with seeded(seed):
        return study_augmentation().draw(torch.zeros(num, 1, 28, 28))


def keras_as_ours(params: dict) -> np.ndarray:
    """Keras's draw in our terms: rotation (°), x and y displacement (px), x and y scale.

    scipy maps each output pixel o to the input point R(z·o + t) it samples: zoom z samples a z times wider area, so
    the image scales by 1/z, and the shift t (in input pixels) moves it by −t/z. ``tx`` is the horizontal one.
    """
    zx, zy = params["zx"], params["zy"]
    return np.array([-params["theta"], -params["tx"] / zx, -params["ty"] / zy, 1 / zx, 1 / zy])


def test_parameter_ranges_match_image_data_generator(parity):
    keras_params = keras_draws(NUM_DRAWS, SEED)
    keras_raw = np.array([[p["theta"], p["tx"], p["ty"], p["zx"], p["zy"]] for p in keras_params])
    keras_effective = np.stack([keras_as_ours(p) for p in keras_params])
    angle, translate, scale = our_draws(NUM_DRAWS, SEED)
    ours = torch.cat([angle[:, None], translate, scale[:, None], scale[:, None]], dim=1).double().numpy()

    def endpoints(values: np.ndarray) -> np.ndarray:
        return np.array([values.min(), values.max()])

    # rotation: both U(−10°, 10°)
    assert np.abs(ours[:, 0]).max() <= 10 and np.abs(keras_raw[:, 0]).max() <= 10
    rotation = np.abs(endpoints(ours[:, 0]) - endpoints(keras_raw[:, 0])).max()
    parity("DataModule", "augmentation: rotation range (°), max |ours − Keras| over the endpoints", rotation, 0.01)

    # shift: both draw U(−2.8, 2.8) px (0.1 × 28), continuous
    assert np.abs(ours[:, 1:3]).max() <= 2.8 and np.abs(keras_raw[:, 1:3]).max() <= 2.8
    shift = np.abs(endpoints(ours[:, 1:3]) - endpoints(keras_raw[:, 1:3])).max()
    parity("DataModule", "augmentation: shift range (px), max |ours − Keras| over the endpoints", shift, 0.01)
    mean_shift = np.abs(np.abs(ours[:, 1:3]).mean() - np.abs(keras_effective[:, 1:3]).mean())
    parity(
        "DataModule",
        "augmentation: mean |image displacement| (px), |ours − Keras| (Keras: shift / zoom)",
        mean_shift,
        None,
    )

    # zoom: the same U(0.9, 1.1) parameter, but Keras's is the inverse scale and drawn per axis
    assert ours[:, 3].min() >= 0.9 and ours[:, 3].max() <= 1.1
    assert keras_raw[:, 3:].min() >= 0.9 and keras_raw[:, 3:].max() <= 1.1
    zoom = np.abs(endpoints(ours[:, 3]) - endpoints(keras_raw[:, 3:])).max()
    parity("DataModule", "augmentation: zoom range, max |our scale − Keras zx, zy| over the endpoints", zoom, 0.001)
    scale = np.abs(endpoints(ours[:, 3]) - endpoints(keras_effective[:, 3:])).max()
    parity("DataModule", "augmentation: image scale range, max |ours − Keras 1/zoom| over the endpoints", scale, None)
    anisotropy = np.abs(keras_effective[:, 3] / keras_effective[:, 4] - 1).mean()
    parity("DataModule", "augmentation: mean |x scale / y scale − 1|, Keras (ours: 0)", anisotropy, None)


def test_same_parameters_give_the_same_warp(images, parity):
    """Our draws mapped to Keras's terms warp the image alike wherever both sample inside it."""
    generator = ImageDataGenerator(**STUDY)
    angle, translate, scale = our_draws(NUM_WARPED, SEED)
    batch = torch.from_numpy(images[:NUM_WARPED]).permute(0, 3, 1, 2)
    ours = affine_warp(batch, angle, translate, scale)[:, 0].numpy()
    inside = affine_warp(torch.ones_like(batch), angle, translate, scale)[:, 0].numpy() >= 1 - 1e-6
    worst = worst_as_scale = 0.0
    for index, image in enumerate(images[:NUM_WARPED]):
        zoom = 1 / scale[index].item()
        dx, dy = translate[index].tolist()
        keras_params = {"theta": -angle[index].item(), "tx": -dx * zoom, "ty": -dy * zoom, "zx": zoom, "zy": zoom}
        theirs = generator.apply_transform(image, keras_params)[..., 0]
        worst = max(worst, np.abs(ours[index] - theirs)[inside[index]].max())
        as_scale = generator.apply_transform(image, {**keras_params, "zx": 1 / zoom, "zy": 1 / zoom})[..., 0]
        worst_as_scale = max(worst_as_scale, np.abs(ours[index] - as_scale)[inside[index]].max())
    parity(
        "DataModule",
        f"augmentation: warp with the same parameters, max |ours − Keras| ({NUM_WARPED} images)",
        worst,
        1e-5,
    )
    parity("DataModule", "augmentation: the same, Keras zoom read as scale instead of 1/scale", worst_as_scale, None)


def pixel_change_ours(images: np.ndarray, transform: RandomAffine, seed: int) -> np.ndarray:
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
    """The D above which a two-sample Kolmogorov–Smirnov test of ``num`` against ``num`` rejects at ``alpha``.

    Asymptotic; at 2,000 it agrees with ks_2samp's exact p-values (D > 0.0515 exactly when p < 0.01 in the seed runs).
    """
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(2 / num)


@pytest.fixture(scope="module")
def keras_change(images) -> np.ndarray:
    """Keras's pixel change with black fill, as RandomAffine fills: the fill mode is left out of the comparison."""
    return pixel_change_keras(images, SEED, fill_mode="constant", cval=0.0)


def test_pixel_change_distribution_matches_keras(images, keras_change, parity):
    ours = pixel_change_ours(images, study_augmentation(), SEED)
    parity(
        "DataModule",
        f"augmentation: pixel change, KS D vs Keras fill 'constant' 0 ({len(images)} images)",
        ks_2samp(ours, keras_change).statistic,
        ks_critical(len(images)),
    )
    parity(
        "DataModule",
        "augmentation: pixel change, KS D vs Keras default fill 'nearest'",
        ks_2samp(ours, pixel_change_keras(images, SEED)).statistic,
        None,
    )


WRONG = [
    pytest.param("rotation ±20°", {"degrees": 20, "translate": 0.1}, id="rotation20"),
    pytest.param("shift ±20 %", {"degrees": 10, "translate": 0.2}, id="shift20"),
]


@pytest.mark.parametrize(("name", "ranges"), WRONG)
def test_pixel_change_test_rejects_other_ranges(images, keras_change, parity, name, ranges):
    """Negative control: the same test, with a RandomAffine of one doubled range in place of ours, must reject it."""
    wrong = RandomAffine(**ranges, scale=(0.9, 1.1))
    statistic = ks_2samp(pixel_change_ours(images, wrong, SEED), keras_change).statistic
    parity(
        "DataModule", f"augmentation: negative control {name}, KS D vs Keras (must exceed the bound)", statistic, None
    )
    assert statistic > ks_critical(len(images))
