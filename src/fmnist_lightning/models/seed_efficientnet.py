"""The study's "EfficientNet", a depthwise-separable net (``configs/seed_efficientnet.yaml``)."""

from typing import Any

from fmnist_lightning.networks.keras_layers import RunningVarUpdate
from fmnist_lightning.networks.seed_efficientnet import seed_efficientnet
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model("seed_efficientnet")
class SeedEfficientNet(FashionMNISTClassifier):
    """``networks.seed_efficientnet``: what the study called "EfficientNet".

    Args:
        bn_running_var: How training updates the BatchNorms' running variance, which evaluation uses: "keras",
            with the batch's biased variance (÷ n) as Keras's BatchNormalization does (the study's config sets
            it); "torch", with the unbiased one (÷ (n − 1)), as torch's BatchNorm does and as this model trained
            before the option existed (the default, so checkpoints and code from then go on as they were; the
            published checkpoints evaluate the same under either, since the option changes only training).
    """

    def __init__(self, bn_running_var: RunningVarUpdate = "torch", **kwargs: Any) -> None:
        super().__init__(net=seed_efficientnet(bn_running_var), **kwargs)
