"""LeNet-5, the study's recipe's model (``configs/lenet.yaml``)."""

from typing import Any

from fmnist_lightning.networks.lenet import lenet5
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "lenet",
    title="LeNet-5",
    summary="the study's LeNet-5: tanh, max pooling, a 'same' first convolution",
    parameters=61_706,
    configs=("configs/lenet.yaml",),
    weights=("lenet", "lenet_plus"),
)
class LeNet5(FashionMNISTClassifier):
    """The study's LeNet-5 (``networks.lenet5``) trained as ``FashionMNISTClassifier`` trains every model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(net=lenet5(), **kwargs)
