"""Jason Brownlee's tutorial CNN as the study ran it (average pooling; the tutorial itself used max pooling)."""

from typing import Any, Literal

from torch import nn

from fmnist_lightning.models.base import FashionMNISTClassifier
from fmnist_lightning.models.keras_layers import glorot_uniform_, he_uniform_


class BrownleeCNN(FashionMNISTClassifier):
    """542,230 parameters. ``pool='max'`` gives the tutorial's original MaxPooling2D."""

    def __init__(self, pool: Literal["avg", "max"] = "avg", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = nn.Sequential(
            he_uniform_(nn.Conv2d(1, 32, 3)),  # 32@26×26, 'valid'
            nn.ReLU(),
            nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2),  # 32@13×13
            nn.Flatten(),
            glorot_uniform_(nn.Linear(32 * 13 * 13, 100)),
            nn.ReLU(),
            glorot_uniform_(nn.Linear(100, 10)),
        )
