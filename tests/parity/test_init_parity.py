"""Initialisation: each fresh Lightning model draws its weights from the distributions the study's Keras model uses.

The reference is Keras's own: each Keras layer's initializer (a ``VarianceScaling`` such as glorot_uniform or
he_uniform) and Keras's ``compute_fans`` of its kernel shape give the bound ``√(3·scale/n)`` of the uniform and its
standard deviation ``bound/√3``. Our kernels come from torch's xavier/kaiming initialisers, which compute fans from
the transposed layout — depthwise kernels are (in, 1, kh, kw) in torch and (kh, kw, in, 1) in Keras, so torch's
fan_in is Keras's fan_out and vice versa; glorot uses their sum, so the bound is the same.

The std check pools each layer's kernels over re-initialisations until it holds at least ``MIN_POOLED`` values: the
sample std of a uniform has relative standard error √(0.2/n) ≤ 0.83 %, so the 5 % tolerance is 6 standard errors
and a correct initialiser fails it with probability about 2e-9 per layer.
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
    worst_std, worst_bound = 0.0, 0.0
    for index, keras_layer in kernel_pairs:
        initializer, bound = keras_kernel_distribution(keras_layer)
        pooled = torch.cat([layers[index].module.weight.detach().flatten() for layers in models]).double()
        assert pooled.numel() >= MIN_POOLED
        assert pooled.abs().max() <= bound * (1 + 1e-6), f"{models[0][index].name}: value outside ±{bound:.4g}"
        relative_std_error = abs(pooled.std().item() / (bound / math.sqrt(3)) - 1)
        assert relative_std_error <= STD_TOLERANCE, f"{models[0][index].name} vs {initializer}: {relative_std_error}"
        worst_std = max(worst_std, relative_std_error)
        worst_bound = max(worst_bound, pooled.abs().max().item() / bound)
    name = torch_class.__name__
    parity(name, f"init: kernel std vs Keras initializer's, max relative error (≥ {MIN_POOLED} values/layer)",
           worst_std, STD_TOLERANCE)  # fmt: skip
    parity(name, "init: max |kernel| / Keras initializer's bound", worst_bound, 1.0)


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
