"""Keras's layer defaults, so each architecture file reads like the study's Keras code."""

from __future__ import annotations

from torch import nn


def glorot_uniform_(module: nn.Module) -> nn.Module:
    """Keras's default: glorot-uniform kernels and zero biases, for every conv and dense layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def he_uniform_(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """Keras ``kernel_initializer='he_uniform'``: U(±√(6 / fan_in)), zero bias."""
    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def BatchNorm(num_features: int, dims: int = 2) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """Keras ``BatchNormalization()``: epsilon 1e-3, momentum 0.99 (torch's momentum is 1 − Keras's)."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(num_features, eps=1e-3, momentum=0.01)
