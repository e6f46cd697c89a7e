"""Bring weights of the study's Keras models into the matching LightningModule.

Keras stores images channels-last: conv kernels are (kh, kw, in, out), depthwise kernels (kh, kw, in, 1) and dense
kernels (in, out), and a Flatten after a conv stack orders features (h, w, c) where torch orders them (c, h, w).
Layers are paired in order, Keras's weighted layers against the module's conv, dense and BatchNorm layers.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmnist_lightning.errors import UserInputError
from fmnist_lightning.registry import list_models, model_class
from fmnist_lightning.runs.checkpoints import INSTANTIATOR
from fmnist_lightning.safe_files import write_atomically
from fmnist_lightning.training.module import FashionMNISTClassifier, count_params

BatchNormLayer = nn.modules.batchnorm._BatchNorm

# Keras layer class → its name in a Keras 3 ``.weights.h5`` file (snake case, numbered in model order).
KERAS_KINDS = {
    "Conv2D": "conv2d",
    "DepthwiseConv2D": "depthwise_conv2d",
    "Dense": "dense",
    "BatchNormalization": "batch_normalization",
}


@dataclass
class KerasLayer:
    name: str
    kind: str  # a key of KERAS_KINDS
    weights: list[np.ndarray]


@dataclass
class TorchLayer:
    name: str
    module: nn.Module
    flattened: tuple[int, int, int] | None  # (h, w, c) that a Flatten fed into this Linear


def keras_kind(layer: nn.Module) -> str:
    """The Keras layer class a torch layer stands for."""
    if isinstance(layer, nn.Conv2d):
        depthwise = layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
        return "DepthwiseConv2D" if depthwise else "Conv2D"
    return "Dense" if isinstance(layer, nn.Linear) else "BatchNormalization"


def torch_weighted_layers(module: nn.Module) -> list[TorchLayer]:
    """The conv, dense and BatchNorm layers of ``module`` in order, with the geometry each Flatten sees."""
    flatten_inputs: dict[nn.Module, tuple[int, ...]] = {}
    hooks = [
        layer.register_forward_hook(lambda m, inputs, _: flatten_inputs.__setitem__(m, tuple(inputs[0].shape[1:])))
        for layer in module.modules()
        if isinstance(layer, nn.Flatten)
    ]
    was_training = module.training
    with torch.no_grad():
        module.eval()(torch.zeros(1, 1, 28, 28, dtype=next(module.parameters()).dtype))
    module.train(was_training)
    for hook in hooks:
        hook.remove()
    layers, flattened = [], None
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Flatten) and len(flatten_inputs.get(layer, ())) == 3:
            channels, height, width = flatten_inputs[layer]
            flattened = (height, width, channels)
        elif isinstance(layer, (nn.Conv2d, nn.Linear, BatchNormLayer)):
            layers.append(TorchLayer(name, layer, flattened if isinstance(layer, nn.Linear) else None))
            if isinstance(layer, nn.Linear):
                flattened = None
    return layers


def keras_model_layers(source: Any) -> list[KerasLayer]:
    """The weighted layers of a ``keras.Model``, or of one saved as ``.keras`` or legacy Keras-2 ``.h5``."""
    os.environ.setdefault("KERAS_BACKEND", "torch")  # torch is always here; TensorFlow need not be
    try:
        import keras
    except ImportError:
        raise UserInputError("reading Keras models needs Keras 3: pip install 'fmnist-lightning[keras]'") from None

    model = source
    if not isinstance(source, keras.Model):
        try:
            with warnings.catch_warnings():  # Keras 2 files declare input_shape on the first layer; Keras 3 warns
                warnings.filterwarnings("ignore", "Do not pass an `input_shape`", UserWarning)
                model = keras.saving.load_model(source, compile=False)
        except Exception as error:  # Keras raises many types for unreadable files
            raise UserInputError(f"cannot load Keras model {source}: {error}") from None
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if layer.weights and kind not in KERAS_KINDS:
            raise UserInputError(f"Keras layer '{layer.name}' ({kind}) has no counterpart in this project's models")
        if layer.weights:
            layers.append(KerasLayer(layer.name, kind, [np.asarray(w) for w in layer.get_weights()]))
    return layers


def keras_weights_file_layers(path: Path, order: list[str]) -> list[KerasLayer]:
    """The layers of a Keras 3 ``.weights.h5`` file, which holds no architecture.

    Keras names the file's layers by class and position (``conv2d``, ``conv2d_1``, …, ``dense``), whatever the
    layers were called, so each kind's layers come out in model order; ``order`` (the torch model's kinds)
    interleaves the kinds. Shapes are still checked layer by layer afterwards.
    """
    import h5py

    by_kind: dict[str, list[tuple[int, KerasLayer]]] = {kind: [] for kind in KERAS_KINDS}
    snake_to_kind = {snake: kind for kind, snake in KERAS_KINDS.items()}
    try:
        with h5py.File(path, "r") as file:
            for name, group in file.get("layers", {}).items():
                match = re.fullmatch(r"([a-z0-9_]+?)(?:_(\d+))?", name)
                weights = [np.asarray(group["vars"][key]) for key in sorted(group.get("vars", {}), key=int)]
                if not weights:
                    continue
                if match is None or match[1] not in snake_to_kind:
                    raise UserInputError(f"Keras layer '{name}' in {path} has no counterpart in this project's models")
                kind = snake_to_kind[match[1]]
                by_kind[kind].append((int(match[2] or 0), KerasLayer(name, kind, weights)))
    except OSError as error:
        raise UserInputError(f"cannot read Keras weights {path}: {error}") from None
    queues = {
        kind: [layer for _, layer in sorted(numbered, key=lambda item: item[0])] for kind, numbered in by_kind.items()
    }
    ordered = []
    for kind in order:
        if not queues[kind]:
            break  # the file has fewer layers of this kind: the leftovers below meet a mismatching torch layer
        ordered.append(queues[kind].pop(0))
    return ordered + [layer for queue in queues.values() for layer in queue]


def to_torch_layout(kind: str, weights: list[np.ndarray], flattened: tuple[int, int, int] | None) -> list[np.ndarray]:
    """Keras weights of one layer, reordered into the torch layer's tensors (weight, bias, running stats)."""
    if kind == "Conv2D":
        return [weights[0].transpose(3, 2, 0, 1), *weights[1:]]
    if kind == "DepthwiseConv2D":
        return [weights[0].transpose(2, 3, 0, 1), *weights[1:]]
    if kind == "Dense":
        kernel = weights[0]
        if flattened is not None and kernel.shape[0] == np.prod(flattened):  # (h, w, c) features → (c, h, w)
            height, width, channels = flattened
            kernel = kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
        return [kernel.T, *weights[1:]]
    return weights  # BatchNormalization: gamma, beta, moving mean, moving variance


def torch_tensors(layer: nn.Module) -> list[torch.Tensor]:
    tensors = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    if isinstance(layer, BatchNormLayer):
        tensors += [layer.running_mean, layer.running_var]
    return tensors


def load_keras_weights(model: FashionMNISTClassifier, source: Any) -> FashionMNISTClassifier:
    """Copy a Keras model's weights into ``model`` (in place, returned); raise on the first layer that differs.

    ``source``: a ``keras.Model``, or the path of a ``.keras`` file, a Keras 3 ``.weights.h5`` file or a legacy
    Keras-2 ``.h5`` model file.
    """
    torch_layers = torch_weighted_layers(model.net)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"Keras file {path} not found")
        if path.name.endswith(".weights.h5"):
            keras_layers = keras_weights_file_layers(path, [keras_kind(layer.module) for layer in torch_layers])
        else:
            keras_layers = keras_model_layers(path)
    else:
        keras_layers = keras_model_layers(source)
    model_name = type(model).__name__
    converted = []
    for keras_layer, torch_layer in zip(keras_layers, torch_layers, strict=False):
        arrays = to_torch_layout(keras_layer.kind, keras_layer.weights, torch_layer.flattened)
        targets = torch_tensors(torch_layer.module)
        torch_shapes = [tuple(t.shape) for t in targets]
        if keras_layer.kind != keras_kind(torch_layer.module) or [a.shape for a in arrays] != torch_shapes:
            keras_shapes = [tuple(w.shape) for w in keras_layer.weights]
            raise UserInputError(
                f"Keras layer '{keras_layer.name}' ({keras_layer.kind}, weights {keras_shapes}) does not match "
                f"{model_name} layer net.{torch_layer.name} ({type(torch_layer.module).__name__}, "
                f"weights {torch_shapes})"
            )
        converted += zip(targets, arrays, strict=True)
    if len(keras_layers) != len(torch_layers):
        extra = (
            f"Keras layer '{keras_layers[len(torch_layers)].name}'"
            if len(keras_layers) > len(torch_layers)
            else f"{model_name} layer net.{torch_layers[len(keras_layers)].name}"
        )
        raise UserInputError(
            f"the Keras model has {len(keras_layers)} weighted layers, {model_name} has {len(torch_layers)}: "
            f"{extra} has no counterpart; pick the --model that matches the Keras architecture"
        )
    with torch.no_grad():
        for target, array in converted:
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)))
    return model


def save_converted_checkpoint(model: FashionMNISTClassifier, path: Path, source: Any) -> Path:
    """Write ``model`` as a Lightning checkpoint that ``test``, ``validate`` and ``predict`` accept.

    The hyperparameters carry the class path as LightningCLI records it, so ``--ckpt_path`` alone picks the model.
    An existing file is never replaced; the file appears whole or not at all.
    """
    import lightning

    if path.exists():
        raise UserInputError(f"{path} already exists; choose another --out or remove it first")
    model_class = type(model)
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": model.state_dict(),
        "hparams_name": "kwargs",
        "hyper_parameters": {  # as LightningCLI records them, so that fmnist_lightning.load builds the class
            "_class_path": f"fmnist_lightning.models.{model_class.__name__}",
            "_instantiator": INSTANTIATOR,
            **model.hparams,
        },
        "converted_from_keras": str(source),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: torch.save(checkpoint, file))
    return path


def convert_command(args: list[str]) -> int:
    """Turn a trained Keras model of the study into a Lightning checkpoint of the matching model."""
    names = {info.class_name: info for info in list_models() if info.study is not None}  # the study's four
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning convert-keras",
        description="Convert a Keras model of the study (.keras, .weights.h5 or legacy .h5) into a checkpoint "
        "that `test --ckpt_path FILE` and `predict --ckpt_path FILE` accept.",
    )
    parser.add_argument("source", type=Path, help="the Keras model file")
    parser.add_argument("--model", required=True, choices=list(names), help="the matching architecture")
    parser.add_argument("--out", type=Path, help="the checkpoint to write (default: SOURCE's name with .ckpt)")
    options = parser.parse_args(args)
    out = options.out or Path(options.source.name.split(".")[0] + ".ckpt")
    model = load_keras_weights(model_class(names[options.model].class_path)(), options.source)
    save_converted_checkpoint(model, out, options.source)
    print(f"wrote {out}: {options.model} with the weights of {options.source} ({count_params(model):,} parameters)")
    print(f"evaluate it: python -m fmnist_lightning test --ckpt_path {out} --data.data_dir DATA_DIR")
    return 0
