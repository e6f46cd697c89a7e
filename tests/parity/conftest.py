"""Keras 3 is the reference: its PyTorch backend unless KERAS_BACKEND is already set (tensorflow works too)."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
