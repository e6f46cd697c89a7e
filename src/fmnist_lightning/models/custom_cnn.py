"""The study's custom CNN, its best CNN (``configs/custom_cnn.yaml``)."""

from typing import Any

from fmnist_lightning.networks.custom_cnn import KernelInitializer, custom_cnn
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "custom_cnn",
    title="the study's custom CNN",
    summary="two conv/BN/pool stages, dropout, Dense 128 + BN (the study's third iteration)",
    parameters=225_930,
    configs=("configs/custom_cnn.yaml",),
    weights=("custom_cnn", "custom_cnn_plus"),
)
class CustomCNN(FashionMNISTClassifier):
    """``networks.custom_cnn`` with its dropout rate and the initializer of its hidden layers.

    Args:
        dropout: The rate of its Dropout layer (the study's 0.4).
        kernel_initializer: Keras's name of the initializer of its two conv layers and its Dense 128: the study's
            ``he_uniform``, or ``he_normal`` or ``uniform`` as its grid search tried (configs/sweeps/study_grid.yaml).
    """

    def __init__(
        self, dropout: float = 0.4, kernel_initializer: KernelInitializer = "he_uniform", **kwargs: Any
    ) -> None:
        super().__init__(net=custom_cnn(dropout, kernel_initializer=kernel_initializer), **kwargs)
