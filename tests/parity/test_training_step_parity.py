"""Training steps: the same weights, batches and loss give the same weights in Keras and in the Lightning model.

Each model trains on the first five batches of the real training set with its study optimizer, taken from its
recipe in ``configs/`` on the torch side and from the study's notebook on the Keras side; Dropout is 0 so both runs
are deterministic. SGD is linear in the gradient, so every weight is compared. Adam is not: see ``ADAM_WINDOW``.

BatchNorm's running variance: Keras updates it with the biased batch variance (divided by n), torch with the
unbiased one (divided by n − 1, n = batch × height × width values per channel), so after a step torch's is larger
by 0.01 · var/(n − 1). The check undoes that: each step's batch variance is recovered from torch's update and
re-applied divided by n, and only then compared with Keras's moving variance.
"""

from __future__ import annotations

import itertools
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
from test_models_parity import randomize_batchnorm_statistics

from fmnist_lightning.commands.convert_keras import load_keras_weights
from fmnist_lightning.models import BrownleeCNN, CustomCNN, FashionMNISTClassifier, LeNet5, SeedEfficientNet
from support import REPO, study_arrays

BN_MOMENTUM = 0.01  # torch's, = 1 − Keras's 0.99
SPEED_OPTIONS = ("channels_last", "compile")


@dataclass
class Recipe:
    """One model's training: Keras and torch models with Dropout 0, the study's Keras optimizer, the config."""

    build_keras: Callable[[], keras.Model]
    build_torch: Callable[[], FashionMNISTClassifier]
    keras_optimizer: Callable[[], keras.optimizers.Optimizer]
    config: str
    batch_size: int
    tolerances: tuple[float, float]  # weights and loss, after 1 and after 5 steps

    @property
    def name(self) -> str:
        return self.build_torch().__class__.__name__


RECIPES = [
    Recipe(lenet5, LeNet5, lambda: keras.optimizers.SGD(0.01), "lenet", 64, (1e-5, 1e-5)),
    Recipe(brownlee_cnn, BrownleeCNN, lambda: keras.optimizers.SGD(0.001, momentum=0.9), "brownlee", 32, (1e-5, 1e-5)),
    Recipe(partial(custom_cnn, dropout=0.0), partial(CustomCNN, dropout=0.0), lambda: keras.optimizers.Adam(0.001),
           "custom_cnn", 32, (1e-5, 1e-3)),
    Recipe(seed_efficientnet, SeedEfficientNet, lambda: keras.optimizers.Adam(), "seed_efficientnet", 64, (1e-5, 1e-3)),
]  # fmt: skip
ADAM_RECIPES = RECIPES[2:]
STEPS = 5
# Adam's first step moves a weight by lr·g/(|g| + ε̂), ε̂ = ε/√(1 − β₂) ≈ 3.2e-6: a gradient error δ shifts it by
# lr·ε̂·δ/(|g| + ε̂)², up to lr·δ/ε̂ ≈ 316·δ at g = 0. Weights whose gradient is exactly 0 (from a feature that is
# constant over the batch, such as Fashion-MNIST's black corners) get a step of float-noise sign, up to ±lr, in any
# two float32 implementations. Weights with |g| below this are compared separately and reported, not asserted.
ADAM_WINDOW = 1e-4


def config_model_args(config: str) -> dict:
    return yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())["model"]["init_args"]


def config_speed_options(config: str) -> dict:
    """The speed options the config turns on (``channels_last``, ``compile``): parity must hold with them."""
    return {key: value for key, value in config_model_args(config).items() if key in SPEED_OPTIONS}


def real_batches(folder: Path, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first five batches of the training set, as the study fed them (x / 255.0, one-hot)."""
    images, labels = study_arrays(folder, "train")
    count = batch_size * STEPS
    images = torch.from_numpy(images[:count]).permute(0, 3, 1, 2).contiguous()
    targets = F.one_hot(torch.from_numpy(labels[:count].astype(np.int64)), 10).float()
    return list(zip(images.split(batch_size), targets.split(batch_size), strict=True))


def keras_form_running_var(history: list[torch.Tensor], values_per_channel: int) -> torch.Tensor:
    """Torch's running variances after each step, re-derived with Keras's biased batch variance."""
    corrected = history[0]
    for before, after in itertools.pairwise(history):
        unbiased = (after - (1 - BN_MOMENTUM) * before) / BN_MOMENTUM
        biased = unbiased * (values_per_channel - 1) / values_per_channel
        corrected = (1 - BN_MOMENTUM) * corrected + BN_MOMENTUM * biased
    return corrected


def largest(values: torch.Tensor) -> float:
    return values.max().item() if values.numel() else 0.0


def batchnorm_layers(model: FashionMNISTClassifier) -> list[torch.nn.Module]:
    return [m for m in model.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def train_in_lockstep(recipe: Recipe, torch_optimizer: dict, data: list) -> dict[int, dict[str, float]]:
    """Max abs differences after step 1 and step 5: loss, weights, BN running mean and corrected running var."""
    keras.utils.set_random_seed(0)
    keras_model = recipe.build_keras()
    randomize_batchnorm_statistics(keras_model, np.random.default_rng(0))
    keras_model.compile(optimizer=recipe.keras_optimizer(), loss="categorical_crossentropy")
    model = load_keras_weights(recipe.build_torch(**config_speed_options(recipe.config)), keras_model).train()
    model.setup("fit")  # applies the speed options as fit does
    optimizer = instantiate_class(model.parameters(), torch_optimizer)
    norms = batchnorm_layers(model)
    values_per_channel: dict[torch.nn.Module, int] = {}
    for norm in norms:  # per channel, BN normalises batch × height × width values
        norm.register_forward_hook(
            lambda m, inputs, _: values_per_channel.__setitem__(m, inputs[0].numel() // m.num_features)
        )
    history = {norm: [norm.running_var.clone()] for norm in norms}
    differences = {}
    for step, (images, targets) in enumerate(data, start=1):
        optimizer.zero_grad()
        loss = model.loss(model(images), targets)
        loss.backward()
        if step == 1:  # Adam's first step is about ±lr wherever |gradient| ≫ ε̂, but noise-driven inside ε̂'s window
            window = ADAM_WINDOW if "Adam" in torch_optimizer["class_path"] else 0.0
            in_window = [p.grad.abs() < window for p in model.parameters()]
        optimizer.step()
        keras_loss = keras_model.train_on_batch(images.permute(0, 2, 3, 1).numpy(), targets.numpy())
        for norm in norms:
            history[norm].append(norm.running_var.clone())
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
            "BN running var": max(
                [(keras_form_running_var(history[a], values_per_channel[a]) - b.running_var).abs().max().item()
                 for a, b in pairs], default=0.0),
        }  # fmt: skip
    return differences


def record(parity: Callable, recipe: Recipe, label: str, step: int, measured: dict, tolerance: float | None) -> None:
    """One report row per quantity; Adam's ε-window weights are reported beside the asserted ones."""
    window_size = int(measured.pop("ε-window weights"))
    window_difference = measured.pop("weights in ε window")
    has_batchnorm = bool(batchnorm_layers(recipe.build_torch()))
    for quantity, difference in measured.items():
        if quantity == "weights" and window_size:
            quantity = f"weights with |gradient| ≥ {ADAM_WINDOW:.0e}"
        if has_batchnorm or not quantity.startswith("BN"):
            parity(recipe.name, f"{label}: {quantity} after {step} step(s)", difference, tolerance)
    if window_size:
        quantity = f"the {window_size} weights with |gradient| < {ADAM_WINDOW:.0e}"
        parity(recipe.name, f"{label}: {quantity} after {step} step(s)", window_difference, None)


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.name)
def test_training_steps_match_keras(parity, real_data, recipe):
    """Loss, weights and BN running statistics after one and five steps (BN: the step's tolerance, since after
    five Adam steps they follow weights that may differ by 1e-3)."""
    torch_optimizer = config_model_args(recipe.config)["optimizer"]
    label = " ".join([torch_optimizer["class_path"].rsplit(".", 1)[-1], *config_speed_options(recipe.config)])
    differences = train_in_lockstep(recipe, torch_optimizer, real_batches(real_data, recipe.batch_size))
    for (step, measured), tolerance in zip(differences.items(), recipe.tolerances, strict=True):
        record(parity, recipe, label, step, measured, tolerance)


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", ADAM_RECIPES, ids=lambda recipe: recipe.name)
def test_torch_adam_for_comparison(parity, real_data, recipe):
    """Reported, not asserted: ``torch.optim.Adam`` with Keras's hyperparameters on the same batches."""
    torch_adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001, "eps": 1e-7}}
    differences = train_in_lockstep(recipe, torch_adam, real_batches(real_data, recipe.batch_size))
    for step, measured in differences.items():
        weights_only = {key: measured[key] for key in ("weights", "weights in ε window", "ε-window weights")}
        record(parity, recipe, "torch.optim.Adam", step, weights_only, None)
