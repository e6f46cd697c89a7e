"""A small CNN for time to accuracy on a CPU (``configs/fast.yaml``, ``configs/fast93.yaml``)."""

from typing import Any

from fmnist_lightning.networks.fast_cnn import fast_cnn
from fmnist_lightning.registry import register_model
from fmnist_lightning.training import FashionMNISTClassifier


@register_model(
    "fast_cnn",
    title="FastCNN",
    summary="a small CNN built for time to accuracy on a CPU",
    parameters=174_938,
    configs=("configs/fast.yaml", "configs/fast93.yaml"),
    weights=("fast", "fast93"),
)
class FastCNN(FashionMNISTClassifier):
    """``networks.fast_cnn`` with its width, hidden size and dropout."""

    def __init__(self, width: int = 16, hidden: int = 256, dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(net=fast_cnn(width, hidden, dropout), **kwargs)
