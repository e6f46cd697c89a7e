"""Training: the LightningModule every network trains with, and what it trains with (KerasAdam, EMA, interrupts)."""

from fmnist_lightning.training.ema import EMAWithWarmup
from fmnist_lightning.training.interrupt import SaveOnInterrupt
from fmnist_lightning.training.module import FashionMNISTClassifier, count_params
from fmnist_lightning.training.optim import KerasAdam

__all__ = ["EMAWithWarmup", "FashionMNISTClassifier", "KerasAdam", "SaveOnInterrupt", "count_params"]
