"""Bring weights of the study's Keras models into the matching LightningModule.

Keras stores images channels-last: conv kernels are (kh, kw, in, out), depthwise kernels (kh, kw, in, 1) and dense
kernels (in, out), and a Flatten after a conv stack orders features (h, w, c) where torch orders them (c, h, w).
Layers are paired in order, Keras's weighted layers against the module's conv, dense and BatchNorm layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models.base import FashionMNISTClassifier

# Keras layer class → the torch layer type it becomes.
KERAS_TO_TORCH = {
    "Conv2D": nn.Conv2d,
    "DepthwiseConv2D": nn.Conv2d,
    "Dense": nn.Linear,
    "BatchNormalization": nn.modules.batchnorm._BatchNorm,
}


def load_keras_model(source: Any) -> Any:
    """A ``keras.Model``, or one loaded from a ``.keras`` file or a legacy Keras-2 ``.h5`` model file."""
    import keras

    if isinstance(source, keras.Model):
        return source
    path = Path(source)
    if not path.is_file():
        raise UserInputError(f"Keras model file {path} not found")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for unreadable files
        raise UserInputError(f"cannot load Keras model {path}: {error}") from None


def keras_weighted_layers(keras_model: Any) -> list[tuple[Any, tuple[int, ...] | None]]:
    """Each Keras layer that has weights, with the (h, w, c) shape a Flatten fed into it (for the first Dense)."""
    layers, flattened = [], None
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind == "Flatten":
            flattened = tuple(layer.input.shape[1:])
        elif layer.weights:
            if kind not in KERAS_TO_TORCH:
                raise UserInputError(f"Keras layer '{layer.name}' ({kind}) has no counterpart in this project's models")
            layers.append((layer, flattened if kind == "Dense" else None))
            if kind == "Dense":
                flattened = None
    return layers


def torch_weighted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, kinds)]


def to_torch_layout(kind: str, weights: list[np.ndarray], flattened: tuple[int, ...] | None) -> list[np.ndarray]:
    """Keras weights of one layer, reordered into the torch layer's tensors (weight, bias, running stats)."""
    if kind == "Conv2D":
        return [weights[0].transpose(3, 2, 0, 1), *weights[1:]]
    if kind == "DepthwiseConv2D":
        return [weights[0].transpose(2, 3, 0, 1), *weights[1:]]
    if kind == "Dense":
        kernel = weights[0]
        if flattened is not None and len(flattened) == 3:  # (h, w, c) features → torch's (c, h, w)
            height, width, channels = flattened
            kernel = kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
        return [kernel.T, *weights[1:]]
    return weights  # BatchNormalization: gamma, beta, moving mean, moving variance


def torch_tensors(layer: nn.Module) -> list[torch.Tensor]:
    tensors = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        tensors += [layer.running_mean, layer.running_var]
    return tensors


def load_keras_weights(model: FashionMNISTClassifier, source: Any) -> FashionMNISTClassifier:
    """Copy a Keras model's weights into ``model`` (in place, returned); raise on the first layer that differs."""
    keras_model = load_keras_model(source)
    keras_layers, torch_layers = keras_weighted_layers(keras_model), torch_weighted_layers(model.net)
    converted = []
    for (keras_layer, flattened), (torch_name, torch_layer) in zip(keras_layers, torch_layers, strict=False):
        kind = type(keras_layer).__name__
        keras_weights = [np.asarray(w) for w in keras_layer.get_weights()]
        arrays = to_torch_layout(kind, keras_weights, flattened)
        targets = torch_tensors(torch_layer)
        keras_shapes = [tuple(w.shape) for w in keras_weights]
        torch_shapes = [tuple(t.shape) for t in targets]
        if not isinstance(torch_layer, KERAS_TO_TORCH[kind]) or [a.shape for a in arrays] != torch_shapes:
            raise UserInputError(
                f"Keras layer '{keras_layer.name}' ({kind}, weights {keras_shapes}) does not match "
                f"{type(model).__name__} layer net.{torch_name} ({type(torch_layer).__name__}, weights {torch_shapes})"
            )
        converted += zip(targets, arrays, strict=True)
    if len(keras_layers) != len(torch_layers):
        extra = (
            f"Keras layer '{keras_layers[len(torch_layers)][0].name}'"
            if len(keras_layers) > len(torch_layers)
            else f"{type(model).__name__} layer net.{torch_layers[len(keras_layers)][0]}"
        )
        raise UserInputError(
            f"the Keras model has {len(keras_layers)} weighted layers, {type(model).__name__} has "
            f"{len(torch_layers)}: {extra} has no counterpart; pick the --model that matches the Keras architecture"
        )
    with torch.no_grad():
        for target, array in converted:
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)))
    return model
