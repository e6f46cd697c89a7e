"""Plain ``nn.Module`` networks (images N×1×28×28 → logits N×10): no Lightning, no data, no figures.

Each builder reads top to bottom like the Keras model's ``summary()``; ``keras_layers`` holds the Keras defaults
(initialisers, BatchNormalization's epsilon and momentum, Dropout, MaxPooling2D) that make them the study's layers.
"""

from fmnist_lightning.networks.brownlee import brownlee_cnn
from fmnist_lightning.networks.custom_cnn import custom_cnn
from fmnist_lightning.networks.fast_cnn import fast_cnn
from fmnist_lightning.networks.lenet import lenet5
from fmnist_lightning.networks.seed_efficientnet import seed_efficientnet
from fmnist_lightning.networks.wide_resnet import WideBlock, wide_resnet

__all__ = ["WideBlock", "brownlee_cnn", "custom_cnn", "fast_cnn", "lenet5", "seed_efficientnet", "wide_resnet"]
