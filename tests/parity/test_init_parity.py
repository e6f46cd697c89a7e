"""Initialisation: each fresh Lightning model draws its weights from the distributions the study's Keras model uses.

The reference is Keras's own: each Keras layer's initializer (a ``VarianceScaling`` such as glorot_uniform or
he_uniform) and Keras's ``compute_fans`` of its kernel shape give the bound ``√(3·scale/n)`` of the uniform and its
standard deviation ``bound/√3``. Our kernels come from torch's xavier/kaiming initialisers, which compute fans from
the transposed layout — depthwise kernels are (in, 1, kh, kw) in torch and (kh, kw, in, 1) in Keras, so torch's
fan_in is Keras's fan_out and vice versa; glorot uses their sum, so the bound is the same.

The std check pools each layer's kernels over re-initialisations until it holds at least ``MIN_POOLED`` values: the
sample std of a uniform has relative standard error √(0.2/n) ≤ 0.83 %, so the 5 % tolerance is 6 standard errors
and a correct initialiser fails it with probability about 2e-9 per layer. The std alone cannot tell apart initialisers
whose bounds are close (he_uniform and glorot_uniform of a Dense(1600→128) are 3.8 % apart; a std off by
3.8 % passes at 5 %), so the bound is checked too, from both sides: no value may exceed it, and the largest |value|
must come within the order-statistics tolerance ``bound_tolerance(n)`` below it (≤ 0.48 % at n ≥ 2880, and far
less in the large layers).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import torch
from keras.src.initializers.random_initializers import compute_fans
from test_models_parity import IDS, PAIRS

from fmnist_lightning.commands.convert_keras import BatchNormLayer, torch_weighted_layers

MIN_POOLED = 2880  # 0.05 / √(0.2 / 2880) = 6 standard errors
STD_TOLERANCE = 0.05
BOUND_FALSE_FAILURE = 1e-6  # per layer


def bound_tolerance(n: int, false_failure: float = BOUND_FALSE_FAILURE) -> float:
    """How far below the bound L the largest of n |values| may fall: t with P(max|w| < (1 − t)·L) = false_failure.

    For n i.i.d. draws of U(−L, L), each |w|/L is U(0, 1), so P(max|w|/L < r) = rⁿ: max|w|/L is distributed as
    U^(1/n). Setting (1 − t)ⁿ = p gives t = 1 − p^(1/n) ≈ ln(1/p)/n: 0.48 % at n = 2880 and p = 1e-6, 13.8/n in
    general. An initializer whose bound is 3.8 % lower (glorot_uniform where he_uniform is due in a Dense 1600→128:
    bounds 1.039 apart) leaves max|w|/L ≤ 0.962 whatever it draws, 8× that tolerance below; one whose bound is 3.9 %
    higher puts a value above L with probability 1 − (1/1.039)ⁿ > 1 − 1e-47, which the upper check (max|w| ≤ L, to
    float rounding) catches.
    """
    return 1 - false_failure ** (1 / n)


def keras_kernel_distribution(layer: keras.layers.Layer) -> tuple[str, float]:
    """The name of the Keras layer's kernel initializer and the bound of its uniform distribution."""
    initializer = getattr(layer, "depthwise_initializer", None) or layer.kernel_initializer
    assert initializer.distribution == "uniform", f"{layer.name}: {type(initializer).__name__} is not uniform"
    fan_in, fan_out = compute_fans(tuple(layer.weights[0].shape))
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[initializer.mode]
    return type(initializer).__name__, math.sqrt(3 * initializer.scale / fan)


def keras_weighted_layers(keras_model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in keras_model.layers if layer.weights]


@pytest.mark.parametrize(("build_keras", "torch_class"), PAIRS, ids=IDS)
def test_kernels_follow_the_keras_initializers(parity, build_keras, torch_class):
    keras_layers = keras_weighted_layers(build_keras())
    kernel_pairs = [
        (index, keras_layer)
        for index, keras_layer in enumerate(keras_layers)
        if not isinstance(keras_layer, keras.layers.BatchNormalization)
    ]
    smallest = min(int(np.prod(layer.weights[0].shape)) for _, layer in kernel_pairs)
    models = []
    for seed in range(math.ceil(MIN_POOLED / smallest)):
        torch.manual_seed(seed)
        models.append(torch_weighted_layers(torch_class()))
    worst_std, worst_bound, worst_shortfall = 0.0, 0.0, 0.0
    for index, keras_layer in kernel_pairs:
        initializer, bound = keras_kernel_distribution(keras_layer)
        pooled = torch.cat([layers[index].module.weight.detach().flatten() for layers in models]).double()
        assert pooled.numel() >= MIN_POOLED
        layer_name = models[0][index].name
        ratio = pooled.abs().max().item() / bound
        assert ratio <= 1 + 1e-6, f"{layer_name}: value outside ±{bound:.4g} ({initializer}): max|w|/bound {ratio:.6f}"
        tolerance = bound_tolerance(pooled.numel())
        assert 1 - ratio <= tolerance, (
            f"{layer_name}: max|w| / {initializer}'s bound {bound:.4g} is {ratio:.6f}, more than the order-statistics "
            f"tolerance {tolerance:.2e} below 1 ({pooled.numel()} values): its bound is smaller"
        )
        relative_std_error = abs(pooled.std().item() / (bound / math.sqrt(3)) - 1)
        assert relative_std_error <= STD_TOLERANCE, f"{layer_name} vs {initializer}: {relative_std_error}"
        worst_std = max(worst_std, relative_std_error)
        worst_bound = max(worst_bound, ratio)
        worst_shortfall = max(worst_shortfall, (1 - ratio) / tolerance)
    name = torch_class.__name__
    parity(name, f"init: kernel std vs Keras initializer's, max relative error (≥ {MIN_POOLED} values/layer)",
           worst_std, STD_TOLERANCE)  # fmt: skip
    parity(name, "init: max |kernel| / Keras initializer's bound", worst_bound, 1.0)
    parity(name, "init: (1 − max |kernel| / bound) / its order-statistics tolerance (p = 1e-6), worst layer",
           worst_shortfall, 1.0)  # fmt: skip


@pytest.mark.parametrize(("build_keras", "torch_class"), PAIRS, ids=IDS)
def test_biases_and_batchnorm_start_as_in_keras(parity, build_keras, torch_class):
    """Zero biases; BN gamma 1, beta 0, moving mean 0, moving variance 1 — compared with the fresh Keras model's."""
    keras_layers = keras_weighted_layers(build_keras())
    torch_layers = torch_weighted_layers(torch_class())
    difference, compared = 0.0, 0
    for keras_layer, torch_layer in zip(keras_layers, torch_layers, strict=True):
        module = torch_layer.module
        if isinstance(module, BatchNormLayer):
            ours = [module.weight, module.bias, module.running_mean, module.running_var]
            theirs = keras_layer.get_weights()
        elif module.bias is not None:
            ours, theirs = [module.bias], keras_layer.get_weights()[1:]
        else:
            ours, theirs = [], keras_layer.get_weights()[1:]
        assert len(ours) == len(theirs), f"{torch_layer.name}: {len(ours)} vectors, Keras {len(theirs)}"
        for tensor, array in zip(ours, theirs, strict=True):
            difference = max(difference, np.abs(tensor.detach().numpy() - array).max())
            compared += 1
    assert compared > 0
    parity(torch_class.__name__, "init: biases and BN γ, β, mean, variance vs fresh Keras model", difference, 0.0)
