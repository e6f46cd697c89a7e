"""The Keras Fashion-MNIST study's CNNs, reimplemented with PyTorch Lightning.

The names below load on first use (PEP 562), so that ``python -m fmnist_lightning --help`` and ``models`` answer
without importing torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.fashion_mnist import CLASS_NAMES
from fmnist_lightning.registry import MODELS_PACKAGE, builtin_models, create_model, list_models, register_model

__version__ = "0.1.0"
_LAZY = {
    "FashionMNISTDataModule": "fmnist_lightning.data",
    "FashionMNISTClassifier": "fmnist_lightning.training",
    "load": "fmnist_lightning.runs.loading",
    **{info.class_name: MODELS_PACKAGE for info in builtin_models()},  # LeNet5, …: the project's models
}
__all__ = ["CLASS_NAMES", "UserInputError", "create_model", "list_models", "register_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fmnist_lightning' has no attribute {name!r}")
