"""The study's custom CNN, its best CNN (``configs/custom_cnn.yaml``)."""

from typing import Any

from fmnist_lightning.networks.custom_cnn import custom_cnn
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model("custom_cnn")
class CustomCNN(FashionMNISTClassifier):
    """``networks.custom_cnn`` with its dropout rate.

    Args:
        dropout: The rate of its Dropout layer (the study's 0.4).
    """

    def __init__(self, dropout: float = 0.4, **kwargs: Any) -> None:
        super().__init__(net=custom_cnn(dropout), **kwargs)
