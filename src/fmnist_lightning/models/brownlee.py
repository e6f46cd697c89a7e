"""Jason Brownlee's tutorial CNN as the study ran it (``configs/brownlee.yaml``)."""

from typing import Any, Literal

from fmnist_lightning.networks.brownlee import brownlee_cnn
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "brownlee",
    title="Brownlee's CNN",
    summary="Jason Brownlee's tutorial CNN as the study ran it (average pooling)",
    parameters=542_230,
    configs=("configs/brownlee.yaml",),
    weights=("brownlee", "brownlee_plus"),
)
class BrownleeCNN(FashionMNISTClassifier):
    """``networks.brownlee_cnn``; ``pool='max'`` gives the tutorial's original MaxPooling2D."""

    def __init__(self, pool: Literal["avg", "max"] = "avg", **kwargs: Any) -> None:
        super().__init__(net=brownlee_cnn(pool), **kwargs)
