"""The study's recipes as data, checked: each fact of ``study.STUDY_RECIPES`` (from ../shared/STUDY.md) against
what the model's study config builds through the CLI's own parser (``FashionMNISTCLI(..., run=False)``).

Where Keras and torch name or count a thing differently the translation is written here and checked, not assumed:

- Keras's ``SGD(learning_rate, momentum)`` keeps ``v = momentum·v − lr·g; w += v``; torch's ``SGD(lr, momentum)``
  ``b = momentum·b + g; w −= lr·b``: the same steps while lr is constant (``v = −lr·b``), with torch's dampening 0,
  nesterov False and no weight decay (tests/parity/test_training_step_parity.py runs both).
- Keras's ``Adam(learning_rate, beta_1, beta_2, epsilon)`` is the project's ``KerasAdam(lr, betas, eps)``, not torch's
  Adam, which adds ε to the bias-corrected √v̂ (fmnist_lightning.training.optim).
- ``monitor='val_loss'``, the epoch's validation loss, is the project's logged ``val/loss``; Keras's ``mode='auto'``
  minimises a loss.
- ``EarlyStopping(patience=p)`` stops after p epochs without improvement, as Lightning's ``EarlyStopping(patience=p)``;
  ``restore_best_weights=True`` is the best-val-loss checkpoint tested afterwards (``test --ckpt_path best``).
- ``ReduceLROnPlateau(patience=p, min_delta=d)`` reduces after p epochs without an improvement of d (absolute); torch's
  reduces after more than ``patience`` such epochs, so p − 1, with ``threshold=d, threshold_mode='abs'``.
- ``KFold(5, shuffle=True, random_state=1)`` is ``validation: {protocol: kfold, num_folds: 5, split_seed: 1}``
  (data.datasets).

The callbacks' translations are also run: the same validation losses through the Keras callbacks built from the
table and through the config's Lightning callback and torch scheduler must stop at the same epoch and give the same
learning rates.
"""

from __future__ import annotations

import importlib
import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fmnist_lightning.data.datasets import kfold_indices
from fmnist_lightning.observe.fit_summary import recipe_checkpoint
from fmnist_lightning.registry import get_model_info
from fmnist_lightning.study import STUDY_RECIPES, KerasCall, StudyRecipe
from support import REPO, write_dataset

STUDY_MODELS = tuple(STUDY_RECIPES)  # lenet, brownlee, custom_cnn, seed_efficientnet
KERAS_METRICS = {"val_loss": "val/loss", "val_accuracy": "val/acc"}  # Keras's log name → the project's


def study_config(name: str) -> Path:
    (config,) = get_model_info(name).configs
    return REPO / config


def parse_study_config(name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI as ``fit --config configs/<name>.yaml`` builds it, without running: model, data module, trainer."""
    from fmnist_lightning.commands.cli import FashionMNISTCLI

    monkeypatch.setattr("sys.argv", ["fmnist"])  # LightningCLI warns when pytest's own arguments are there
    args = ["--config", str(study_config(name)), "--data.data_dir", str(data_dir), "--trainer.logger", "false"]
    return FashionMNISTCLI(args, run=False)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recipe") / "fmnist"
    write_dataset(folder)
    return folder


@pytest.fixture(scope="module")
def study_cli(tiny_folder: Path) -> Any:
    """``study_cli(name)``: the parsed CLI of a study config, parsed once per module."""
    parsed: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in parsed:
            with pytest.MonkeyPatch.context() as patch:
                parsed[name] = parse_study_config(name, tiny_folder, patch)
        return parsed[name]

    return get


def recipe(name: str) -> StudyRecipe:
    study = get_model_info(name).study
    assert study is not None and study.keras_recipe is STUDY_RECIPES[name]
    return study.keras_recipe


# --- the table itself ---------------------------------------------------------------------------------------------


def test_the_table_holds_the_four_study_models():
    assert STUDY_MODELS == ("lenet", "brownlee", "custom_cnn", "seed_efficientnet")
    for name in STUDY_MODELS:
        assert recipe(name).validation in ("test", "kfold")
        assert (recipe(name).folds is not None) == (recipe(name).validation == "kfold")


def test_the_keras_defaults_in_the_table_are_keras_s():
    """Each argument the table marks as a default is the installed Keras's default for that class."""
    import keras

    calls = [call for r in STUDY_RECIPES.values() for call in (r.optimizer, *r.callbacks)]
    checked = 0
    for call in calls:
        module = keras.optimizers if call.name.startswith("keras.optimizers.") else keras.callbacks
        parameters = inspect.signature(getattr(module, call.class_name)).parameters
        for key in call.defaults:
            assert parameters[key].default == call.kwargs[key], f"{call.name}: {key}"
            checked += 1
    assert checked >= 10


# --- batch size, epochs, optimizer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_batch_size_and_epochs(name, study_cli):
    cli, facts = study_cli(name), recipe(name)
    assert cli.datamodule.hparams.batch_size == facts.batch_size
    assert cli.trainer.max_epochs == facts.epochs
    assert cli.trainer.max_steps == -1  # no other limit on the run
    # all of them, unless an EarlyStopping may end the run sooner
    stoppers = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert bool(stoppers) == (facts.callback("EarlyStopping") is not None)


def torch_optimizer_for(call: KerasCall) -> tuple[str, dict[str, Any]]:
    """The torch optimizer that takes the steps of a Keras one (the module docstring), and its hyperparameters."""
    args = call.kwargs
    if call.class_name == "SGD":
        return "torch.optim.SGD", {
            "lr": args["learning_rate"],
            "momentum": args["momentum"],
            "nesterov": args["nesterov"],
            "dampening": 0,
            "weight_decay": 0,
        }
    if call.class_name == "Adam":
        betas = (args["beta_1"], args["beta_2"])
        return "fmnist_lightning.training.KerasAdam", {
            "lr": args["learning_rate"],
            "betas": betas,
            "eps": args["epsilon"],
        }
    raise AssertionError(f"no translation for {call.name}")


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_optimizer(name, study_cli):
    cli, facts = study_cli(name), recipe(name)
    class_path, expected = torch_optimizer_for(facts.optimizer)
    assert cli.config.model.init_args.optimizer.class_path == class_path
    optimizer = cli.model.optimizer([nn.Parameter(torch.zeros(1))])
    module, _, class_name = class_path.rpartition(".")
    assert type(optimizer) is getattr(importlib.import_module(module), class_name)
    group = optimizer.param_groups[0]
    assert {key: group[key] for key in expected} == expected
    # nothing else that changes a step: torch's SGD's other options only choose its kernels
    assert group.get("maximize", False) is False
    assert set(group) <= {*expected, "params", "maximize", "foreach", "differentiable", "fused"}


# --- dropout, preprocessing, loss ---------------------------------------------------------------------------------


def torch_layer_name(module: nn.Module) -> str:
    """A torch layer in the study table's words: "Flatten", "Dense 128", ..."""
    if isinstance(module, nn.Linear):
        return f"Dense {module.out_features}"
    return type(module).__name__


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_dropout_rates_and_places(name, study_cli):
    """Every nn.Dropout of the network the config builds, in order: its rate (torch's p is Keras's rate, both the
    probability of dropping a value) and its neighbours."""
    layers = list(study_cli(name).model.net.modules())[1:]
    found = [(index, layer) for index, layer in enumerate(layers) if isinstance(layer, nn.Dropout)]
    assert tuple(layer.p for _, layer in found) == tuple(d.rate for d in recipe(name).dropout)
    for (index, _), dropout in zip(found, recipe(name).dropout, strict=True):
        assert (torch_layer_name(layers[index - 1]), torch_layer_name(layers[index + 1])) == (
            dropout.after,
            dropout.before,
        )


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_preprocessing_and_loss(name, study_cli):
    """``x / 255.0`` and nothing more (the data module's [0, 1] pixels, no standardisation); categorical
    cross-entropy on one-hot labels: no label smoothing, mixup or cutmix, no test-time flips."""
    cli, facts = study_cli(name), recipe(name)
    assert (facts.preprocessing, facts.loss) == ("x / 255.0", "categorical_crossentropy")
    data = cli.datamodule.augmentation
    assert (data.label_smoothing, data.mixup_alpha, data.cutmix_alpha) == (0.0, 0.0, 0.0)
    assert cli.model.hparams.standardize is False
    assert cli.model.hparams.tta_flip is False
    assert cli.model.hparams.warmup == 0


# --- validation protocol ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_validation_protocol(name, study_cli):
    data, facts = study_cli(name).datamodule.validation, recipe(name)
    assert data.protocol == facts.validation
    if facts.validation == "kfold":
        folds = facts.folds.kwargs
        assert facts.folds.class_name == "KFold" and folds["shuffle"] is True
        assert (data.num_folds, data.split_seed) == (folds["n_splits"], folds["random_state"])
        assert data.fold == 0  # the config runs fold 0; --data.validation.fold 1..4 the others


def test_the_project_s_folds_are_sklearn_s_kfold():
    """``validation.protocol: kfold`` with ``num_folds`` and ``split_seed`` cuts the 60,000 training images as the
    study's ``KFold(n_splits, shuffle=True, random_state)`` did."""
    model_selection = pytest.importorskip("sklearn.model_selection")
    (call,) = {r.folds for r in STUDY_RECIPES.values() if r.folds is not None}
    args = call.kwargs
    ours = kfold_indices(60_000, args["n_splits"], args["random_state"])
    theirs = [val for _, val in model_selection.KFold(**args).split(range(60_000))]
    assert len(ours) == len(theirs) == args["n_splits"]
    for mine, sklearn_fold in zip(ours, theirs, strict=True):
        assert np.sort(mine).tolist() == sklearn_fold.tolist()


# --- augmentation ---------------------------------------------------------------------------------------------------


def keras_ranges(augmentation: nn.Module) -> dict[str, float]:
    """The ImageDataGenerator ranges the data module's affine warp draws from, in Keras's names.

    Keras: angle ~ U(±rotation_range) degrees, shifts ~ U(±range)·size, zoom ~ U(1 ± zoom_range) (the project's
    ``ImageDataGeneratorAffine`` keeps Keras's names; an affine warp with torchvision's names (degrees, translate,
    scale) is read as rotation_range = degrees, shift ranges = translate, zoom_range = the half-width of a scale range
    centred on 1).
    """
    if hasattr(augmentation, "zoom_range"):
        names = ("rotation_range", "width_shift_range", "height_shift_range", "zoom_range")
        return {key: float(getattr(augmentation, key)) for key in names}
    low, high = augmentation.scale
    assert math.isclose(low + high, 2.0), f"a zoom range is centred on 1, got {augmentation.scale}"
    return {
        "rotation_range": float(augmentation.degrees),
        "width_shift_range": float(augmentation.translate),
        "height_shift_range": float(augmentation.translate),
        "zoom_range": round((high - low) / 2, 12),
    }


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_augmentation(name, study_cli):
    cli, facts = study_cli(name), recipe(name)
    data = cli.datamodule.augmentation
    # nothing the study did not do: no crops or erasing, and a flip only where its generator flipped
    flips = bool(facts.augmentation and facts.augmentation.kwargs.get("horizontal_flip"))
    assert (data.crop_padding, data.erasing, data.hflip) == (0, 0.0, flips)
    if facts.augmentation is None:
        assert data.affine is False and cli.datamodule.image_transform is None
        return
    assert facts.augmentation.class_name == "ImageDataGenerator"
    assert data.affine is True
    (warp,) = list(cli.datamodule.image_transform)  # the study's affine warp alone
    expected = {key: float(value) for key, value in facts.augmentation.args if key != "horizontal_flip"}
    assert keras_ranges(warp) == expected


# --- callbacks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_early_stopping_and_restored_weights(name, study_cli):
    cli, facts = study_cli(name), recipe(name)
    stoppers = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    call = facts.callback("EarlyStopping")
    restore = bool(call and call.kwargs["restore_best_weights"])
    if call is None:
        assert stoppers == []
    else:
        (stopper,) = stoppers
        args = call.kwargs
        assert stopper.monitor == KERAS_METRICS[args["monitor"]]
        assert (args["mode"], stopper.mode) == ("auto", "min")  # 'auto' on a loss: min (run below, in Keras)
        assert stopper.patience == args["patience"]
        assert abs(stopper.min_delta) == args["min_delta"]
        assert (stopper.stopping_threshold, stopper.divergence_threshold) == (None, None)
    # the weights the recipe is tested with: the best epoch's by the monitored value (restore_best_weights), else
    # the last epoch's, as Keras leaves them
    text = study_config(name).read_text()
    assert recipe_checkpoint([text], cli.datamodule.validation.protocol) == ("best" if restore else "last")
    if restore:
        (best,) = [c for c in cli.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor]
        assert (best.monitor, best.mode, best.save_top_k) == (KERAS_METRICS[call.kwargs["monitor"]], "min", 1)


def torch_scheduler(cli: Any) -> tuple[torch.optim.Optimizer, Any, dict[str, Any]]:
    """The optimizer and scheduler the model's ``configure_optimizers`` builds, over one parameter."""
    model = cli.model
    configured = model.configure_optimizers()
    if not isinstance(configured, dict):
        return configured, None, {}
    return configured["optimizer"], configured["lr_scheduler"]["scheduler"], configured["lr_scheduler"]


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_reduce_lr_on_plateau(name, study_cli):
    cli, facts = study_cli(name), recipe(name)
    call = facts.callback("ReduceLROnPlateau")
    _, scheduler, config = torch_scheduler(cli)
    if call is None:
        assert cli.model.lr_scheduler is None and scheduler is None
        return
    args = call.kwargs
    assert isinstance(scheduler, ReduceLROnPlateau)
    assert config["interval"] == "epoch"
    # the monitored value: Lightning's (automatic optimization) or the project's own stepping (multi_step)
    assert cli.model.hparams.scheduler_monitor == KERAS_METRICS[args["monitor"]]
    assert config.get("monitor", cli.model.hparams.scheduler_monitor) == KERAS_METRICS[args["monitor"]]
    assert (args["mode"], scheduler.mode) == ("auto", "min")
    assert scheduler.factor == args["factor"]
    assert scheduler.patience == args["patience"] - 1  # torch reduces after patience + 1 bad epochs, Keras after p
    assert (scheduler.threshold_mode, scheduler.threshold) == ("abs", args["min_delta"])  # Keras's is absolute
    assert scheduler.cooldown == args["cooldown"]
    assert scheduler.min_lrs == [args["min_lr"]] * len(scheduler.min_lrs)


def keras_model(optimizer: KerasCall) -> Any:
    """A one-weight Keras model compiled with the study's optimizer, for callbacks to act on."""
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=getattr(keras.optimizers, optimizer.class_name)(**optimizer.kwargs), loss="mse")
    return model


def keras_callback(call: KerasCall, model: Any) -> Any:
    import keras

    callback = getattr(keras.callbacks, call.class_name)(**call.kwargs)
    callback.set_model(model)
    callback.on_train_begin()
    return callback


# Validation losses that tell the translations apart: repeats and rises (no improvement), a fall of 5e-5 (an
# improvement for EarlyStopping's min_delta 0, and for a relative 1e-4 threshold at 0.3, but not for an absolute
# 1e-4), plateaus of 2, 3, 4 and 5 epochs, then a long plateau down to min_lr.
LOSSES = [0.9, 0.6, 0.5, 0.5, 0.51, 0.45, 0.46, 0.45, 0.44, 0.44995, 0.44, 0.45, 0.45, 0.3, 0.29995, 0.3, 0.31, 0.32]
LOSSES += [0.28, 0.28005, 0.27999, 0.28, 0.28, 0.28, 0.28] + [0.27] * 40


@pytest.mark.parametrize("name", [n for n in STUDY_MODELS if STUDY_RECIPES[n].callbacks])
def test_the_callbacks_act_as_keras_s(name, study_cli):
    """The same validation losses through Keras's callbacks (built from the table) and the config's: the same epoch
    to stop at, the same learning rate after every epoch."""
    cli, facts = study_cli(name), recipe(name)
    model = keras_model(facts.optimizer)
    if call := facts.callback("EarlyStopping"):
        keras_stopper = keras_callback(call, model)
        (stopper,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
        keras_stop = torch_stop = None
        for epoch, loss in enumerate(LOSSES):
            keras_stopper.on_epoch_end(epoch, {call.kwargs["monitor"]: loss})
            if model.stop_training and keras_stop is None:
                keras_stop = epoch
            should_stop, _ = stopper._evaluate_stopping_criteria(torch.tensor(loss))
            if should_stop and torch_stop is None:
                torch_stop = epoch
        assert keras_stop is not None and torch_stop == keras_stop
        assert keras_stopper.best_epoch == LOSSES.index(min(LOSSES[: keras_stop + 1]))
    if call := facts.callback("ReduceLROnPlateau"):
        keras_reducer = keras_callback(call, model)
        optimizer, scheduler, _ = torch_scheduler(cli)
        keras_lrs, torch_lrs = [], []
        for epoch, loss in enumerate(LOSSES):
            keras_reducer.on_epoch_end(epoch, {call.kwargs["monitor"]: loss})
            keras_lrs.append(float(model.optimizer.learning_rate))
            scheduler.step(loss)
            torch_lrs.append(optimizer.param_groups[0]["lr"])
        assert torch_lrs == pytest.approx(keras_lrs, rel=1e-6)  # Keras's learning rate is a float32 variable
        assert len(set(torch_lrs)) > 5 and torch_lrs[-1] == call.kwargs["min_lr"]  # several reductions, to min_lr
