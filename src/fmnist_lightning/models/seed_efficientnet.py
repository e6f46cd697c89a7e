"""The study's "EfficientNet", a depthwise-separable net (``configs/seed_efficientnet.yaml``)."""

from typing import Any

from fmnist_lightning.networks.seed_efficientnet import seed_efficientnet
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "seed_efficientnet",
    title='the study\'s "EfficientNet"',
    summary="a MobileNet-v1-style stack of depthwise-separable convolutions with swish",
    parameters=321_418,
    configs=("configs/seed_efficientnet.yaml",),
    weights=("seed_efficientnet", "seed_efficientnet_plus"),
)
class SeedEfficientNet(FashionMNISTClassifier):
    """``networks.seed_efficientnet``: what the study called "EfficientNet"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(net=seed_efficientnet(), **kwargs)
