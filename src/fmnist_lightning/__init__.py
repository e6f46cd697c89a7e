"""The Keras Fashion-MNIST study's CNNs, reimplemented with PyTorch Lightning."""

from fmnist_lightning.data import CLASS_NAMES, FashionMNISTDataModule
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models import (
    BrownleeCNN,
    CustomCNN,
    EfficientNet,
    FashionMNISTClassifier,
    LeNet5,
    SeedEfficientNet,
)
from fmnist_lightning.predictions import load

__version__ = "0.1.0"
__all__ = [
    "CLASS_NAMES",
    "BrownleeCNN",
    "CustomCNN",
    "EfficientNet",
    "FashionMNISTClassifier",
    "FashionMNISTDataModule",
    "LeNet5",
    "SeedEfficientNet",
    "UserInputError",
    "load",
]
