"""The study's custom CNN, its best CNN (``configs/custom_cnn.yaml``)."""

from typing import Any

from fmnist_lightning.networks.custom_cnn import custom_cnn
from fmnist_lightning.networks.keras_layers import RunningVarUpdate
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model("custom_cnn")
class CustomCNN(FashionMNISTClassifier):
    """``networks.custom_cnn`` with its dropout rate.

    Args:
        dropout: The rate of its Dropout layer (the study's 0.4).
        bn_running_var: How training updates the BatchNorms' running variance, which evaluation uses: "keras",
            with the batch's biased variance (÷ n) as Keras's BatchNormalization does (the study's config sets
            it); "torch", with the unbiased one (÷ (n − 1)), as torch's BatchNorm does and as this model trained
            before the option existed (the default, so checkpoints and code from then go on as they were; the
            published checkpoints evaluate the same under either, since the option changes only training).
    """

    def __init__(self, dropout: float = 0.4, bn_running_var: RunningVarUpdate = "torch", **kwargs: Any) -> None:
        super().__init__(net=custom_cnn(dropout, bn_running_var), **kwargs)
