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

    The file is read by the one safe loader first (``checkpoints.read_checkpoint``: weights only, a registered
    model), and Lightning's second read is weights-only too, whatever torch's default or the environment say.
    """
    path = Path(path)
    saved = checkpoints.read_checkpoint(path, f"--ckpt_path {path}")  # a damaged or foreign file: UserInputError
    # on the registered class the file records, not the base: Lightning builds the class the checkpoint names only
    # through a class whose __init__ takes **kwargs
    model_class = registry.model_class(saved["hyper_parameters"]["_class_path"])
    with checkpoints.safe_globals():
        model = model_class.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    return model.eval()
