"""The LightningModules of the architectures: one thin class per network, each registered by name.

``fmnist_lightning.models.LeNet5`` and the rest are the class paths that configs and checkpoints record.
"""

from fmnist_lightning.models.brownlee import BrownleeCNN
from fmnist_lightning.models.custom_cnn import CustomCNN
from fmnist_lightning.models.efficientnet import EfficientNet
from fmnist_lightning.models.fast_cnn import FastCNN
from fmnist_lightning.models.lenet import LeNet5
from fmnist_lightning.models.seed_efficientnet import SeedEfficientNet
from fmnist_lightning.models.wide_resnet import WideResNet
from fmnist_lightning.training import FashionMNISTClassifier, count_params

STUDY_MODELS = (LeNet5, BrownleeCNN, CustomCNN, SeedEfficientNet)  # the Keras study's four
MODELS = (*STUDY_MODELS, EfficientNet, FastCNN, WideResNet)

__all__ = [
    "MODELS",
    "STUDY_MODELS",
    "BrownleeCNN",
    "CustomCNN",
    "EfficientNet",
    "FashionMNISTClassifier",
    "FastCNN",
    "LeNet5",
    "SeedEfficientNet",
    "WideResNet",
    "count_params",
]
