"""A wide ResNet, the project's best model (``configs/best.yaml``)."""

from typing import Any

from fmnist_lightning.networks.wide_resnet import wide_resnet
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "wide_resnet",
    title="Wide ResNet",
    summary="WRN-depth-k, the CIFAR design (WRN-16-2 by default)",
    parameters=693_210,
    configs=("configs/best.yaml",),
    weights=("best",),
)
class WideResNet(FashionMNISTClassifier):
    """``networks.wide_resnet``: WRN-``depth``-``widen_factor``."""

    def __init__(self, depth: int = 16, widen_factor: int = 2, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(net=wide_resnet(depth, widen_factor, dropout), **kwargs)
