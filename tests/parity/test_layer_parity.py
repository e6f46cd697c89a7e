"""Layer lists: the network each study config builds, layer by layer, against the study's Keras model
(tests/parity/keras_models.py), both written out in one vocabulary and compared equal.

Each side has its normaliser into items such as ``("conv", 1, 6, (5, 5), (1, 1), "same", "glorot_uniform",
"zeros")``, ``("activation", "tanh")``, ``("maxpool", (2, 2), (2, 2), "valid")``, ``("dense", 400, 120, ...)``,
``("dropout", 0.4)``: kind, input and output sizes, kernel, strides, padding, activation, rate and the kernel and bias
initialisers, in order. The translations, stated and checked here:

- Keras's fused ``activation=`` is the torch module after the layer (``Conv2D(..., activation='relu')`` = Conv2d,
  ReLU); Keras's ``swish`` (``silu``) is torch's SiLU.
- The last Dense's softmax: the torch network ends in logits, and the classifier's loss is cross-entropy of those
  logits (= categorical cross-entropy of the softmax) and its predictions their softmax, which is checked on a batch.
- ``padding='same'``: torch's ``padding="same"``, a symmetric (k − 1)/2 at stride 1, or timm's ``Conv2dSame`` (the
  asymmetric TensorFlow padding, at stride 2); a 1×1 stride-1 convolution pads nothing either way.
- ``GlobalAveragePooling2D()`` is ``AdaptiveAvgPool2d(1)`` + ``Flatten``.
- ``BatchNormalization(momentum=m)`` is torch's momentum 1 − m; ``center``/``scale`` are torch's ``affine``.
- Initialisers: the torch side records which ``torch.nn.init`` function last set each weight while the CLI builds
  the model: ``xavier_uniform_`` (gain 1) is Keras's glorot_uniform, ``kaiming_uniform_`` at gain √2 on fan_in its
  he_uniform (both the same uniform bound; tests/parity/test_init_parity.py measures the distributions), ``zeros_`` and
  ``ones_`` its zeros and ones. Torch's own default (``kaiming_uniform_(a=√5)``) matches no Keras initialiser.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import pytest
import torch
from keras_models import brownlee_cnn, custom_cnn, lenet5, seed_efficientnet
from test_recipe_parity import STUDY_MODELS, parse_study_config, recipe
from torch import nn

from support import write_dataset

KERAS_MODELS: dict[str, Callable[[], keras.Model]] = {
    "lenet": lenet5,
    "brownlee": brownlee_cnn,
    "custom_cnn": custom_cnn,  # its default Dropout(0.4), the study's (checked against the table below)
    "seed_efficientnet": seed_efficientnet,
}
KERAS_ACTIVATIONS = {"silu": "swish"}  # Keras 3 names swish by its alias
TORCH_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.SiLU: "swish", nn.Softmax: "softmax", nn.Sigmoid: "sigmoid"}
RECORDED = ("xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_",
            "trunc_normal_", "zeros_", "ones_", "constant_", "orthogonal_")  # fmt: skip


# --- Keras side ---------------------------------------------------------------------------------------------------


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()  # GlorotUniform → glorot_uniform


def keras_initializer(layer: keras.layers.Layer, attribute: str) -> str:
    return snake(type(getattr(layer, attribute)).__name__)


def keras_activation(layer: keras.layers.Layer) -> list[tuple]:
    name = layer.activation.__name__
    return [] if name == "linear" else [("activation", KERAS_ACTIVATIONS.get(name, name))]


def keras_padding(layer: keras.layers.Layer) -> str:
    if tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1):
        return "same"  # 'same' and 'valid' are one computation here
    return layer.padding


def keras_layer_list(model: keras.Model) -> list[tuple]:
    items: list[tuple] = []
    for layer in model.layers:
        kind = type(layer).__name__
        bias = keras_initializer(layer, "bias_initializer") if getattr(layer, "use_bias", False) else None
        if kind == "InputLayer":
            continue
        elif kind == "Conv2D":
            kh, kw, fan_in, filters = layer.kernel.shape
            init = keras_initializer(layer, "kernel_initializer")
            items.append(("conv", fan_in, filters, (kh, kw), tuple(layer.strides), keras_padding(layer), init, bias))
            items += keras_activation(layer)
        elif kind == "DepthwiseConv2D":
            kh, kw, channels, multiplier = layer.kernel.shape
            init = keras_initializer(layer, "depthwise_initializer")
            shape = (channels, multiplier, (kh, kw), tuple(layer.strides), keras_padding(layer))
            items.append(("depthwise", *shape, init, bias))
            items += keras_activation(layer)
        elif kind == "Dense":
            fan_in, units = layer.kernel.shape
            items.append(("dense", fan_in, units, keras_initializer(layer, "kernel_initializer"), bias))
            items += keras_activation(layer)
        elif kind == "Activation":
            items += keras_activation(layer)
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            pool = "maxpool" if kind == "MaxPooling2D" else "avgpool"
            items.append((pool, tuple(layer.pool_size), tuple(layer.strides), layer.padding))
        elif kind == "GlobalAveragePooling2D":
            assert not layer.keepdims
            items.append(("global_avg_pool",))
        elif kind == "BatchNormalization":
            assert layer.axis in (-1, 3)  # the channels of NHWC: torch's dimension 1
            gamma = keras_initializer(layer, "gamma_initializer") if layer.scale else None
            beta = keras_initializer(layer, "beta_initializer") if layer.center else None
            items.append(("batchnorm", layer.gamma.shape[0], layer.momentum, layer.epsilon, gamma, beta))
        elif kind == "Flatten":
            items.append(("flatten",))
        elif kind == "Dropout":
            items.append(("dropout", layer.rate))
        else:
            raise AssertionError(f"no normaliser for Keras's {kind}")
    return items


# --- torch side ---------------------------------------------------------------------------------------------------


def keras_name_of(function: str, arguments: dict[str, Any]) -> str:
    """The Keras initialiser a ``torch.nn.init`` call draws as (the module docstring), else the call itself."""
    if function == "xavier_uniform_" and arguments["gain"] == 1:
        return "glorot_uniform"
    if function == "kaiming_uniform_" and arguments["mode"] == "fan_in":
        gain = nn.init.calculate_gain(arguments["nonlinearity"], arguments["a"])
        if math.isclose(gain, math.sqrt(2)):
            return "he_uniform"
    if function in ("zeros_", "ones_"):
        return function.removesuffix("_")
    shown = {key: value for key, value in arguments.items() if key not in ("tensor", "generator")}
    return f"torch.nn.init.{function}({shown})"


class InitRecorder:
    """While active, notes which ``torch.nn.init`` function last set each tensor (torch's layers call them through
    the module ``torch.nn.init``, as the project's ``keras_layers`` does)."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.records: dict[int, tuple[torch.Tensor, str]] = {}  # id → (the tensor, kept alive; its initialiser)
        for function in RECORDED:
            patch.setattr(nn.init, function, self.wrap(function, getattr(nn.init, function)))

    def wrap(self, function: str, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            tensor = bound.arguments["tensor"]
            self.records[id(tensor)] = (tensor, keras_name_of(function, dict(bound.arguments)))
            return original(*args, **kwargs)

        return recorded

    def name(self, tensor: torch.Tensor | None) -> str | None:
        if tensor is None:
            return None
        recorded = self.records.get(id(tensor))
        assert recorded is not None and recorded[0] is tensor, "a weight no torch.nn.init function set"
        return recorded[1]


def torch_padding(conv: nn.Conv2d) -> str:
    if type(conv).__name__ == "Conv2dSame":  # timm: TensorFlow's 'same', padded as each input needs
        return "same"
    if conv.padding == "same":
        return "same"
    if conv.padding == (0, 0) and conv.kernel_size != (1, 1):
        return "valid"
    if conv.stride == (1, 1) and all(
        p == (k - 1) // 2 and k % 2 for p, k in zip(conv.padding, conv.kernel_size, strict=True)
    ):
        return "same"
    return f"torch padding {conv.padding}"


def leaves(net: nn.Module) -> Iterator[nn.Module]:
    return (module for module in net.modules() if not list(module.children()))


def torch_layer_list(net: nn.Module, inits: InitRecorder) -> list[tuple]:
    items: list[tuple] = []
    for module in leaves(net):
        bias = inits.name(getattr(module, "bias", None))
        if isinstance(module, nn.Conv2d):
            out, per_group, kh, kw = module.weight.shape
            place = ((kh, kw), module.stride, torch_padding(module))
            if module.groups == module.in_channels > 1:  # depthwise: one filter (or `multiplier`) per channel
                multiplier = out // module.in_channels
                items.append(("depthwise", module.in_channels, multiplier, *place, inits.name(module.weight), bias))
            else:
                assert module.groups == 1 and module.dilation == (1, 1)
                items.append(("conv", per_group, out, *place, inits.name(module.weight), bias))
        elif isinstance(module, nn.Linear):
            items.append(("dense", module.in_features, module.out_features, inits.name(module.weight), bias))
        elif type(module) in TORCH_ACTIVATIONS:
            items.append(("activation", TORCH_ACTIVATIONS[type(module)]))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
            assert module.padding in (0, (0, 0)) and not module.ceil_mode  # Keras's 'valid'
            pool = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
            items.append((pool, pair(module.kernel_size), pair(module.stride), "valid"))
        elif isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            items.append(("global_avg_pool",))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert module.track_running_stats
            gamma, beta = (inits.name(module.weight), inits.name(module.bias)) if module.affine else (None, None)
            momentum = round(1 - module.momentum, 9)
            items.append(("batchnorm", module.num_features, momentum, module.eps, gamma, beta))
        elif isinstance(module, nn.Flatten):
            if items and items[-1] == ("global_avg_pool",):
                continue  # GlobalAveragePooling2D = AdaptiveAvgPool2d(1) + Flatten
            items.append(("flatten",))
        elif isinstance(module, nn.Dropout):
            items.append(("dropout", module.p))
        else:
            raise AssertionError(f"no normaliser for torch's {type(module).__name__}")
    return items


def classifier_output(model: Any) -> list[tuple]:
    """The softmax that Keras's last Dense applies: the classifier's, around the network's logits."""
    model.eval()
    images, targets = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 6, 9])
    with torch.no_grad():
        logits = model(images)
        assert torch.allclose(model.predict_step(images, 0), logits.softmax(dim=1), atol=1e-6)
        cross_entropy = -logits.softmax(dim=1).log()[range(4), targets].mean()
        assert torch.allclose(model.loss(logits, targets), cross_entropy, atol=1e-5)
    return [("activation", "softmax")]


# --- the comparison -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_networks(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[tuple]]:
    """``study_networks(name)``: the layer list of the model that the study config builds, built once."""
    folder: Path = tmp_path_factory.mktemp("layers") / "fmnist"
    write_dataset(folder)
    built: dict[str, list[tuple]] = {}

    def get(name: str) -> list[tuple]:
        if name not in built:
            with pytest.MonkeyPatch.context() as patch:
                inits = InitRecorder(patch)
                model = parse_study_config(name, folder, patch).model
            built[name] = torch_layer_list(model.net, inits) + classifier_output(model)
        return built[name]

    return get


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_the_config_builds_the_keras_model_layer_for_layer(name, study_networks):
    ours, keras_layers = study_networks(name), keras_layer_list(KERAS_MODELS[name]())
    assert ours == keras_layers


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_the_keras_reference_has_the_table_s_dropout(name):
    rates = tuple(layer.rate for layer in KERAS_MODELS[name]().layers if isinstance(layer, keras.layers.Dropout))
    assert rates == tuple(dropout.rate for dropout in recipe(name).dropout)


def test_the_normalisers_tell_initialisers_apart():
    """A layer left at torch's default initialiser is not Keras's glorot_uniform (the check can fail)."""
    with pytest.MonkeyPatch.context() as patch:
        inits = InitRecorder(patch)
        layer = nn.Linear(84, 10)
        (item,) = torch_layer_list(nn.Sequential(layer), inits)
        nn.init.xavier_uniform_(layer.weight)
        (glorot,) = torch_layer_list(nn.Sequential(layer), inits)
    assert item[3].startswith("torch.nn.init.kaiming_uniform_") and item[4].startswith("torch.nn.init.uniform_")
    assert glorot[3] == "glorot_uniform"
