"""The study's custom CNN (its third iteration, its best CNN): two conv/BN/pool stages, Dropout, Dense 128 + BN."""

import math
from functools import partial
from typing import Literal

from torch import nn

from fmnist_lightning.networks.keras_layers import (
    BatchNorm,
    Dropout,
    MaxPooling2D,
    RunningVarUpdate,
    glorot_uniform_,
    he_uniform_,
)

KernelInitializer = Literal["he_uniform", "he_normal", "uniform"]
# Keras's he_normal draws from a normal truncated at 2 std, with its std divided by this (the std of a unit normal
# truncated at ±2) so that the truncated values have std √(2 / fan_in)
_TRUNCATED_STD = 0.87962566103423978


def keras_kernel_init_(layer: nn.Conv2d | nn.Linear, initializer: KernelInitializer) -> nn.Conv2d | nn.Linear:
    """Keras ``kernel_initializer=<name>`` with a zero bias: ``he_uniform`` U(±√(6 / fan_in)); ``he_normal`` a normal
    of std √(2 / fan_in)/0.8796 cut at 2 of those stds; ``uniform`` (Keras's ``RandomUniform()``) U(−0.05, 0.05)."""
    if initializer == "he_uniform":
        return he_uniform_(layer)
    if initializer == "he_normal":
        std = math.sqrt(2 / layer.weight[0].numel()) / _TRUNCATED_STD  # fan_in: inputs × kernel size of one output
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    elif initializer == "uniform":
        nn.init.uniform_(layer.weight, -0.05, 0.05)
    else:
        raise ValueError(f"kernel_initializer must be one of he_uniform, he_normal, uniform, got {initializer!r}")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def custom_cnn(
    dropout: float = 0.4,
    bn_running_var: RunningVarUpdate = "torch",
    kernel_initializer: KernelInitializer = "he_uniform",
) -> nn.Sequential:
    """The study's Keras model, layer for layer (parameters: ``registry``; 448 of them BN running statistics).

    ``kernel_initializer``: of the three hidden layers (the study's he_uniform; its grid search tried the others,
    ``keras_kernel_init_``); the output layer keeps Keras's default glorot_uniform.
    ``bn_running_var``: whether training updates the BatchNorms' running variance with the biased batch variance,
    as Keras does ("keras"), or the unbiased one, as torch does ("torch"): ``keras_layers.KerasRunningVar``.
    """
    batch_norm = partial(BatchNorm, running_var_update=bn_running_var)
    init_ = partial(keras_kernel_init_, initializer=kernel_initializer)
    return nn.Sequential(
        init_(nn.Conv2d(1, 32, 3)),  # 32@26×26
        nn.ReLU(),
        batch_norm(32),
        MaxPooling2D(),  # 32@13×13
        init_(nn.Conv2d(32, 64, 3)),  # 64@11×11
        nn.ReLU(),
        batch_norm(64),
        MaxPooling2D(),  # 64@5×5
        nn.Flatten(),
        Dropout(dropout),
        init_(nn.Linear(64 * 5 * 5, 128)),
        nn.ReLU(),
        batch_norm(128, dims=1),
        glorot_uniform_(nn.Linear(128, 10)),
    )
