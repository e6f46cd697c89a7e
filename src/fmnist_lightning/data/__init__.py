"""Fashion-MNIST for Lightning: the DataModule, its files and datasets, augmentation, and users' own images."""

from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.options import Augmentation, DataFiles, PredictImages, Validation
from fmnist_lightning.fashion_mnist import CLASS_NAMES, MEAN, NUM_CLASSES, STD

__all__ = ["CLASS_NAMES", "MEAN", "NUM_CLASSES", "STD", "Augmentation", "DataFiles", "FashionMNISTDataModule"]
__all__ += ["PredictImages", "Validation"]
