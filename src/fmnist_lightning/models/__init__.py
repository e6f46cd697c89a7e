"""The LightningModules of the architectures: one file per network, its class registered by name with its facts.

The registry finds the files (``registry.builtin_models``), so a new model is its file alone. Importing this package
imports them all and re-exports their classes: ``fmnist_lightning.models.LeNet5`` and the rest are the class paths
that configs and checkpoints record, and jsonargparse finds a ``--model`` given by class name only among the
classes imported.
"""

from fmnist_lightning.registry import builtin_models, model_class
from fmnist_lightning.training import FashionMNISTClassifier, count_params

MODELS = tuple(model_class(info.name) for info in builtin_models())  # in the listing's order
STUDY_MODELS = tuple(model_class(info.name) for info in builtin_models() if info.study is not None)  # the study's four
globals().update({model.__name__: model for model in MODELS})

__all__ = ["MODELS", "STUDY_MODELS", "FashionMNISTClassifier", "count_params", *(model.__name__ for model in MODELS)]
