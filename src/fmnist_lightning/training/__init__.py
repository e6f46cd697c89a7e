"""Training: the LightningModule every network trains with, and what it trains with (KerasAdam, EMA, interrupts)."""

from fmnist_lightning.training.ema import EMAWithWarmup
from fmnist_lightning.training.interrupt import SaveOnInterrupt
from fmnist_lightning.training.module import FashionMNISTClassifier, count_params
from fmnist_lightning.training.optim import KerasAdam, KerasRMSprop

__all__ = ["EMAWithWarmup", "FashionMNISTClassifier", "KerasAdam", "KerasRMSprop", "SaveOnInterrupt", "count_params"]
