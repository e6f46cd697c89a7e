"""Jason Brownlee's tutorial CNN as the study ran it (average pooling; the tutorial itself used max pooling)."""

from typing import Literal

from torch import nn

from fmnist_lightning.networks.keras_layers import glorot_uniform_, he_uniform_


def brownlee_cnn(pool: Literal["avg", "max"] = "avg") -> nn.Sequential:
    """The study's Keras model, layer for layer (parameters: ``registry``); ``pool="max"`` gives the tutorial's
    original MaxPooling2D."""
    return nn.Sequential(
        he_uniform_(nn.Conv2d(1, 32, 3)),  # 32@26×26, 'valid'
        nn.ReLU(),
        nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2),  # 32@13×13
        nn.Flatten(),
        glorot_uniform_(nn.Linear(32 * 13 * 13, 100)),
        nn.ReLU(),
        glorot_uniform_(nn.Linear(100, 10)),
    )
