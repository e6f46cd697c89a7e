"""Training steps: the same weights, batches and loss give the same weights in Keras and in the Lightning model.

Each model trains on the first five batches of the real training set with its study optimizer, taken from its
recipe in ``configs/`` on the torch side (optimizer, batch size, speed options, BatchNorm running variance) and from
the study's notebook on the Keras side; Dropout is 0 so both runs are deterministic. Compared after one step and
after five: the loss, every weight, BatchNorm's running mean and variance as they stand (the study configs set
``bn_running_var: keras``: updated with the biased batch variance, as Keras's moving variance), and the trained
networks' eval-mode outputs, which use those running statistics.

Tolerances are at most ~10× the largest difference measured (x86-64 CPU, 2 cores, Keras 3 on its torch backend;
the figures are in comments). Mutations they catch: SGD momentum 0.8 for Brownlee's 0.9 (weights 3.6e-4 and loss
1.1e-2 after 5 steps, eval 4.9e-2); the learning rate × 1.01 (weights after 1 step: 1.1e-5 LeNet-5, 3.2e-6 Brownlee,
1.0e-5 the custom CNN); torch's running variance for the custom CNN (running var 1.6e-3 after 1 step, eval 1.4e-3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from keras_models import brownlee_cnn, custom_cnn, lenet5, seed_efficientnet
from lightning.pytorch.cli import instantiate_class
from test_models_parity import keras_probabilities, randomize_batchnorm_statistics

from fmnist_lightning.commands.convert_keras import load_keras_weights
from fmnist_lightning.models import BrownleeCNN, CustomCNN, FashionMNISTClassifier, LeNet5, SeedEfficientNet
from fmnist_lightning.training.speed import SpeedSettings
from support import REPO, study_arrays

TORCH_OPTIONS = ("channels_last", "compile", "bn_running_var")  # from the config; parity must hold with them
STEPS = 5
EVAL_IMAGES = 256  # the first test images, for the trained networks' eval-mode outputs


@dataclass
class Recipe:
    """One model's training: Keras and torch models with Dropout 0, the study's Keras optimizer, the config."""

    build_keras: Callable[[], keras.Model]
    build_torch: Callable[..., FashionMNISTClassifier]
    keras_optimizer: Callable[[], keras.optimizers.Optimizer]
    config: str
    tolerances: dict[str, tuple[float, float]]  # per quantity: after 1 step, after 5
    eval_tolerance: float  # softmax outputs after 5 steps, eval mode

    @property
    def name(self) -> str:
        return self.build_torch().__class__.__name__


# Per quantity, (after 1 step, after 5); the figures measured (the same both steps where one is given) in comments.
SGD_TOLERANCES = {"loss": (2e-6, 2e-6), "weights": (1e-7, 1e-7)}  # loss 2.4e-7 and 0, weights 1.5e-8 (both models)
RECIPES = [
    Recipe(lenet5, LeNet5, lambda: keras.optimizers.SGD(0.01), "lenet", SGD_TOLERANCES, 5e-7),  # eval 6.7e-8
    Recipe(brownlee_cnn, BrownleeCNN, lambda: keras.optimizers.SGD(0.001, momentum=0.9), "brownlee", SGD_TOLERANCES,
           2e-6),  # eval 2.4e-7
    Recipe(partial(custom_cnn, dropout=0.0), partial(CustomCNN, dropout=0.0), lambda: keras.optimizers.Adam(0.001),
           "custom_cnn", {
               "loss": (5e-5, 1e-4),  # 6.0e-6, 1.3e-6; on Keras's TensorFlow backend 3.5e-5 after 5 steps
               "weights": (4e-6, 4e-4),  # 4.6e-7, 4.2e-5: the ε window's differences reach the gradients
               "weights in ε window": (1e-3, 1e-3),  # 1.75e-4 (1,194 weights); at most lr = 1e-3 a step
               "BN running mean": (2e-6, 2e-5),  # 2.8e-7, 2.5e-6
               "BN running var": (5e-6, 5e-5),  # 6.6e-7, 7.3e-6 (torch's unbiased update: 1.6e-3, 1.3e-2)
           }, 3e-4),  # eval 3.4e-5 (with torch's running variance 1.4e-3)
    Recipe(seed_efficientnet, SeedEfficientNet, lambda: keras.optimizers.Adam(), "seed_efficientnet", {
               "loss": (2e-6, 3e-5),  # 2.4e-7, 3.3e-6
               "weights": (1e-6, 2e-5),  # 1.2e-7, 2.1e-6
               "weights in ε window": (1e-4, 1e-4),  # 1.76e-5 (14,966 weights)
               "BN running mean": (2e-7, 2e-6),  # 3.0e-8, 2.1e-7
               "BN running var": (1e-6, 4e-6),  # 1.2e-7, 4.8e-7 (torch's unbiased update: 1.2e-5, 5.6e-5)
           }, 5e-7),  # eval 5.2e-8 (with torch's running variance 1.6e-7)
]  # fmt: skip
ADAM_RECIPES = RECIPES[2:]
# Adam's first step moves a weight by lr·g/(|g| + ε̂), ε̂ = ε/√(1 − β₂) ≈ 3.2e-6: a gradient error δ shifts it by
# lr·ε̂·δ/(|g| + ε̂)², up to lr·δ/ε̂ ≈ 316·δ at g = 0. Weights whose gradient is exactly 0 (from a feature that is
# constant over the batch, such as Fashion-MNIST's black corners) get a step of float-noise sign, up to ±lr, in any
# two float32 implementations. Weights with |g| below this window get their own tolerance, from what was measured.
ADAM_WINDOW = 1e-4


def config_of(config: str) -> dict:
    return yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())


def config_torch_options(config: str) -> dict:
    """The options of the config that the torch side takes (speed settings, the model's BatchNorm running variance)."""
    settings = {**config_of(config)["model"]["init_args"], **(config_of(config).get("speed") or {})}
    return {key: value for key, value in settings.items() if key in TORCH_OPTIONS}


def real_batches(folder: Path, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first five batches of the training set, as the study fed them (x / 255.0, one-hot)."""
    images, labels = study_arrays(folder, "train")
    count = batch_size * STEPS
    images = torch.from_numpy(images[:count]).permute(0, 3, 1, 2).contiguous()
    targets = F.one_hot(torch.from_numpy(labels[:count].astype(np.int64)), 10).float()
    return list(zip(images.split(batch_size), targets.split(batch_size), strict=True))


def largest(values: torch.Tensor) -> float:
    return values.max().item() if values.numel() else 0.0


def batchnorm_layers(model: FashionMNISTClassifier) -> list[torch.nn.Module]:
    return [m for m in model.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@functools.cache
def train_in_lockstep(config: str, folder: Path, torch_adam: bool = False) -> tuple[dict, float]:
    """Max abs differences after step 1 and step 5 (loss, weights, BN running statistics as they stand), and of the
    trained networks' eval-mode softmax outputs; with ``torch_adam``, torch's Adam instead of the config's."""
    (recipe,) = [recipe for recipe in RECIPES if recipe.config == config]
    if torch_adam:
        torch_optimizer = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001, "eps": 1e-7}}
    else:
        torch_optimizer = config_of(config)["model"]["init_args"]["optimizer"]
    keras.utils.set_random_seed(0)
    keras_model = recipe.build_keras()
    randomize_batchnorm_statistics(keras_model, np.random.default_rng(0))
    keras_model.compile(optimizer=recipe.keras_optimizer(), loss="categorical_crossentropy")
    options = config_torch_options(config)
    speed = {key: options.pop(key) for key in ("channels_last", "compile") if key in options}
    model = load_keras_weights(recipe.build_torch(**options), keras_model).train()
    SpeedSettings(**speed).apply(model)  # the config's speed settings, as fit applies them
    optimizer = instantiate_class(model.parameters(), torch_optimizer)
    norms = batchnorm_layers(model)
    differences = {}
    for step, (images, targets) in enumerate(real_batches(folder, config_of(config)["data"]["batch_size"]), 1):
        optimizer.zero_grad()
        loss = model.loss(model(images), targets)
        loss.backward()
        if step == 1:  # Adam's first step is about ±lr wherever |gradient| ≫ ε̂, but noise-driven inside ε̂'s window
            window = ADAM_WINDOW if "Adam" in torch_optimizer["class_path"] else 0.0
            in_window = [p.grad.abs() < window for p in model.parameters()]
        optimizer.step()
        keras_loss = keras_model.train_on_batch(images.permute(0, 2, 3, 1).numpy(), targets.numpy())
        if step not in (1, STEPS):
            continue
        keras_now = load_keras_weights(recipe.build_torch(), keras_model)  # Keras's weights in torch's layout
        weights = [(p - q).abs().detach() for p, q in zip(model.parameters(), keras_now.parameters(), strict=True)]
        pairs = list(zip(norms, batchnorm_layers(keras_now), strict=True))
        differences[step] = {
            "loss": abs(loss.item() - float(keras_loss)),
            "weights": max(largest(w[~mask]) for w, mask in zip(weights, in_window, strict=True)),
            "weights in ε window": max(largest(w[mask]) for w, mask in zip(weights, in_window, strict=True)),
            "ε-window weights": sum(int(mask.sum()) for mask in in_window),
            "BN running mean": max([(a.running_mean - b.running_mean).abs().max().item() for a, b in pairs], default=0),
            "BN running var": max([(a.running_var - b.running_var).abs().max().item() for a, b in pairs], default=0),
        }  # fmt: skip
    images = torch.from_numpy(study_arrays(folder, "test")[0][:EVAL_IMAGES]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        ours = model.eval()(images).softmax(dim=1).numpy()
    return differences, float(np.abs(ours - keras_probabilities(keras_model, images)).max())


def record(parity: Callable, recipe: Recipe, label: str, step: int, measured: dict, tolerances: dict | None) -> None:
    """One report row per quantity, asserted at ``tolerances[quantity]`` (None: reported only)."""
    measured = dict(measured)
    window_size = int(measured.pop("ε-window weights"))
    has_batchnorm = bool(batchnorm_layers(recipe.build_torch()))
    for quantity, difference in measured.items():
        row = quantity
        if quantity == "weights in ε window":
            if not window_size:
                continue
            row = f"the {window_size} weights with |gradient| < {ADAM_WINDOW:.0e}"
        elif quantity == "weights" and window_size:
            row = f"weights with |gradient| ≥ {ADAM_WINDOW:.0e}"
        if has_batchnorm or not quantity.startswith("BN"):
            tolerance = None if tolerances is None else tolerances[quantity][0 if step == 1 else 1]
            parity(recipe.name, f"{label}: {row} after {step} step(s)", difference, tolerance)


def config_label(config: str) -> str:
    optimizer = config_of(config)["model"]["init_args"]["optimizer"]["class_path"].rsplit(".", 1)[-1]
    options = config_torch_options(config)
    flags = [key for key in ("channels_last", "compile") if options.get(key)]
    if "bn_running_var" in options:
        flags.append(f"{options['bn_running_var']} running var")
    return " ".join([optimizer, *flags])


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.name)
def test_training_steps_match_keras(parity, real_data, recipe):
    """Loss, weights and BN running statistics after one and five steps."""
    differences, _ = train_in_lockstep(recipe.config, real_data)
    for step, measured in differences.items():
        record(parity, recipe, config_label(recipe.config), step, measured, recipe.tolerances)


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.name)
def test_trained_networks_evaluate_like_keras(parity, real_data, recipe):
    """After five steps in lockstep, the eval-mode softmax outputs on 256 test images: where BatchNorm normalises
    with the running statistics the steps updated."""
    _, eval_difference = train_in_lockstep(recipe.config, real_data)
    label = f"{config_label(recipe.config)}: eval-mode outputs after {STEPS} steps"
    parity(recipe.name, label, eval_difference, recipe.eval_tolerance)


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", ADAM_RECIPES, ids=lambda recipe: recipe.name)
def test_report_torch_adam_differences_not_asserted(parity, real_data, recipe):
    """Asserts nothing: records, as *reported* rows of docs/parity.md, how far ``torch.optim.Adam`` with Keras's
    hyperparameters (lr 1e-3, eps 1e-7) lands from Keras's Adam on the same batches, beside KerasAdam's rows."""
    differences, _ = train_in_lockstep(recipe.config, real_data, torch_adam=True)
    for step, measured in differences.items():
        weights_only = {key: measured[key] for key in ("weights", "weights in ε window", "ε-window weights")}
        record(parity, recipe, "torch.optim.Adam", step, weights_only, None)
