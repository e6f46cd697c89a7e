"""Keras's layer defaults, so each architecture file reads like the study's Keras code."""

from __future__ import annotations

import torch
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


class ContiguousBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises a contiguous copy of a channels-last input on CPU.

    Images that were NHWC arrays (Keras's layout) permuted to NCHW have channels-last strides, and every conv after
    them returns channels-last memory. Torch's CPU batch-norm kernel for that layout computes the batch statistics
    far less accurately: 2e-4 max error against a float64 reference on ReLU features of such images, where the
    contiguous kernel (and Keras) stay within 5e-7 (tests/test_models.py). A no-op for contiguous inputs.
    ``keep_layout`` (set by a model's ``channels_last`` option) trades that exactness for speed.
    """

    keep_layout = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exact = x.device.type == "cpu" and not self.keep_layout
        return super().forward(x.contiguous() if exact else x)


def BatchNorm(num_features: int, dims: int = 2) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """Keras ``BatchNormalization()``: epsilon 1e-3, momentum 0.99 (torch's momentum is 1 − Keras's)."""
    cls = ContiguousBatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(num_features, eps=1e-3, momentum=0.01)
