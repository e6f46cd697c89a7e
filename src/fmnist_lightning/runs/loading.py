"""A trained checkpoint as a model: ``fmnist_lightning.load``."""

from __future__ import annotations

from pathlib import Path

import torch

from fmnist_lightning import registry
from fmnist_lightning.runs import checkpoints
from fmnist_lightning.training.module import FashionMNISTClassifier


def load(path: str | Path, map_location: str | torch.device = "cpu") -> FashionMNISTClassifier:
    """The model of any project checkpoint (a run's, a published ``weights/*.ckpt``, a converted Keras model), in
    eval mode; it standardises its inputs as it was trained to (``model.standardize``), so ``predict_images`` and
    ``model(pixels)`` take plain [0, 1] pixels.

    The file is read once, by the one safe loader (``checkpoints.read_checkpoint``: weights only, a registered
    model), and the model built from what it read.
    """
    path = Path(path)
    saved = checkpoints.read_checkpoint(path, f"--ckpt_path {path}")  # a damaged or foreign file: UserInputError
    # on the registered class the file records, not the base: Lightning builds the class the checkpoint names only
    # through a class whose __init__ takes **kwargs
    model_class = registry.model_class(saved["hyper_parameters"]["_class_path"])
    return model_class.from_checkpoint(saved).to(map_location).eval()
