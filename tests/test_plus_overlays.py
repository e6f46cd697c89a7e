"""The project's recipe as overlays of the study's configs (configs/plus.yaml, configs/plus_bn_ema.yaml), and the
schedule lengths the trainer fills in (training/schedules.py)."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging
from torch.optim.lr_scheduler import CosineAnnealingLR, SequentialLR

from fmnist_lightning import UserInputError
from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.models import LeNet5
from fmnist_lightning.training import EMAWithWarmup
from fmnist_lightning.training.schedules import CosineAnnealingToEndLR
from fmnist_lightning.weights import read_card
from support import REPO, run_in_process


def overlay(model: str) -> list[str]:
    """The --config arguments of a study model's `_plus` recipe."""
    configs = [f"configs/{model}.yaml", "configs/plus.yaml"]
    if model == "seed_efficientnet":
        configs.append("configs/plus_bn_ema.yaml")
    return [arg for config in configs for arg in ("--config", str(REPO / config))]


# configs/<model>_plus.yaml as they were before the overlays (commit bcb39bd): the model and its options, batch
# size, epochs, the hand-computed T_max (the epochs after the 1 warmup epoch) and the weight average
OLD_PLUS = {
    "lenet": ("LeNet5", {}, 64, 20, 19, ("EMAWeightAveraging", {"decay": 0.999})),
    "brownlee": ("BrownleeCNN", {"pool": "avg"}, 32, 10, 9, ("EMAWeightAveraging", {"decay": 0.999})),
    "custom_cnn": ("CustomCNN", {"dropout": 0.4}, 32, 10, 9, ("EMAWeightAveraging", {"decay": 0.999})),
    "seed_efficientnet": ("SeedEfficientNet", {}, 64, 30, 29, ("EMAWithWarmup", {"decay": 0.999, "bn_batches": 50})),
}


@pytest.mark.parametrize("model", OLD_PLUS)
def test_the_overlays_give_each_study_model_its_old_plus_recipe(model, tmp_path):
    """Everything but the speed settings (channels_last, compile, steps_per_execution, eval_batch_size) the study's
    config keeps."""
    name, options, batch_size, epochs, t_max, (ema, ema_args) = OLD_PLUS[model]
    args = [*overlay(model), "--data.data_dir", str(tmp_path), "--trainer.logger", "false"]
    cli = FashionMNISTCLI(args, run=False)
    config = cli.config
    assert config.seed_everything == 1
    assert config.model.class_path == f"fmnist_lightning.models.{name}"
    init = config.model.init_args
    assert {key: init[key] for key in options} == options
    assert (init.standardize, init.tta_flip, init.warmup, init.scheduler_interval) == (True, True, 1, "epoch")
    assert init.bn_running_var == "torch"  # as the _plus weights trained, where the study configs set Keras's
    # the study's 8 or 16 stays, a speed setting: the same steps, schedule, EMA and logged figures as one at a time
    study_speed = yaml.safe_load((REPO / f"configs/{model}.yaml").read_text())["speed"]
    assert config.speed.steps_per_execution == study_speed["steps_per_execution"] > 1
    assert init.optimizer.class_path == "torch.optim.AdamW"
    optimizer = dict(init.optimizer.init_args)
    assert {key: optimizer[key] for key in ("lr", "betas", "eps", "weight_decay", "amsgrad")} == {
        "lr": 0.002,
        "betas": (0.9, 0.999),
        "eps": 1e-08,  # not the study's KerasAdam's 1e-7
        "weight_decay": 0.01,
        "amsgrad": False,
    }
    assert init.lr_scheduler.init_args.eta_min == 0.0
    data, augment = config.data, config.data.augmentation
    assert (data.batch_size, data.validation.protocol, data.validation.val_size) == (batch_size, "split", 5000)
    assert (augment.affine, augment.crop_padding, augment.hflip, augment.label_smoothing) == (False, 2, True, 0.1)
    assert (augment.erasing, augment.mixup_alpha, augment.cutmix_alpha) == (0.0, 0.0, 0.0)
    assert config.trainer.max_epochs == epochs
    assert (config.checkpoint.monitor, config.checkpoint.mode) == ("val/acc", "max")
    # the overlay's callback list replaces the study config's (SeedEfficientNet's EarlyStopping)
    (callback,) = config.trainer.callbacks
    assert callback.class_path.rpartition(".")[2] == ema
    assert {key: callback.init_args[key] for key in ema_args} == ema_args
    assert not any(isinstance(c, EarlyStopping) for c in cli.trainer.callbacks)
    assert sum(isinstance(c, (EMAWeightAveraging, EMAWithWarmup)) for c in cli.trainer.callbacks) == 1

    # the schedule the old config spelled out: 1 warmup epoch, then a cosine over T_max epochs
    cli.model.trainer = cli.trainer
    configured = cli.model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    assert type(optimizer) is torch.optim.AdamW and configured["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(scheduler["scheduler"], SequentialLR)
    ramp, cosine = scheduler["scheduler"]._schedulers
    assert ramp.total_iters == 1 and isinstance(cosine, CosineAnnealingLR) and cosine.T_max == t_max


@pytest.mark.parametrize("model", OLD_PLUS)
def test_each_overlay_composition_fits_with_fast_dev_run(model, tiny_data, tmp_path, monkeypatch):
    """With the study config's speed settings (torch.compile for three of them) under weight averaging."""
    tiny = ["--data.data_dir", str(tiny_data), "--data.validation.val_size", "0.2", "--trainer.fast_dev_run", "true"]
    assert run_in_process(["fit", *overlay(model), *tiny], tmp_path, monkeypatch) == 0


def card_configs(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words) if word == "--config"]


@pytest.mark.parametrize("model", OLD_PLUS)
def test_the_plus_cards_commands_compose_the_overlays(model):
    card = read_card(REPO / "weights" / f"{model}_plus.md")
    configs = [arg for arg in overlay(model) if arg != "--config"]
    assert [str(REPO / config) for config in card["config"]] == configs
    assert [str(REPO / c) for c in card_configs(card["fit_command"])] == configs
    assert [str(REPO / c) for c in card_configs(card["test_command"])] == configs


def test_a_plus_card_fit_and_test_commands_run_and_test_finds_the_run(tiny_data, tmp_path, monkeypatch):
    """The card's two commands as a user runs them (on small data, in the test's process): `test --ckpt_path best`
    with the same overlays finds the overlay's run, not the study recipe's that shares tensorboard_logs/LeNet5/."""

    def cli(args: list[str], cwd: Path) -> None:
        assert run_in_process(args, cwd, monkeypatch) == 0, shlex.join(args)

    card = read_card(REPO / "weights" / "lenet_plus.md")
    (tmp_path / "configs").symlink_to(REPO / "configs")
    small = [
        "--data.validation.val_size",
        "0.2",
        "--run_metrics.latency",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    study = ["fit", "--config", "configs/lenet.yaml", "--data.data_dir", str(tiny_data), *small]
    cli([*study, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"], cwd=tmp_path)
    fit = shlex.split(card["fit_command"].replace("DATA_DIR", str(tiny_data)))[3:]
    cli([*fit, *small, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"], cwd=tmp_path)
    runs = tmp_path / "tensorboard_logs" / "LeNet5"
    test = shlex.split(card["test_command"].replace("DATA_DIR", str(tiny_data)))[3:]
    cli([*test, *small], cwd=tmp_path)
    assert (runs / "version_1" / "config.test.yaml").is_file()
    assert not (runs / "version_0" / "config.test.yaml").exists()


def fit_lenet(tiny_data, tmp_path, epochs: int, **model_args) -> L.Trainer:
    from fmnist_lightning import FashionMNISTDataModule
    from fmnist_lightning.data import DataFiles, Validation

    data = FashionMNISTDataModule(
        str(tiny_data),
        batch_size=16,
        validation=Validation(val_size=0.2),
        files=DataFiles(download=False, cache_dir=str(tmp_path)),
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(LeNet5(optimizer=functools.partial(torch.optim.AdamW, lr=0.002), **model_args), data)
    return trainer


def cosine_of(trainer: L.Trainer) -> CosineAnnealingLR:
    (config,) = trainer.lr_scheduler_configs
    return config.scheduler._schedulers[1] if isinstance(config.scheduler, SequentialLR) else config.scheduler


@pytest.mark.parametrize(
    "scheduler", [CosineAnnealingToEndLR, functools.partial(CosineAnnealingLR)], ids=["ours", "torch's"]
)
def test_a_cosine_without_t_max_lasts_the_epochs_after_warmup(scheduler, tiny_data, tmp_path):
    trainer = fit_lenet(tiny_data, tmp_path, epochs=4, lr_scheduler=scheduler, warmup=1)
    cosine = cosine_of(trainer)
    assert cosine.T_max == 4 - 1
    # and so it ends as the run does: the learning rate reaches eta_min after the last epoch
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_cosine_stepped_every_step_lasts_the_steps_after_warmup(tiny_data, tmp_path):
    trainer = fit_lenet(
        tiny_data, tmp_path, epochs=2, lr_scheduler=CosineAnnealingToEndLR, warmup=2, scheduler_interval="step"
    )
    assert trainer.estimated_stepping_batches == 2 * 3
    assert cosine_of(trainer).T_max == 2 * 3 - 2


def test_a_given_t_max_is_kept_and_a_run_within_its_warmup_still_trains(tiny_data, tmp_path):
    trainer = fit_lenet(tiny_data, tmp_path, epochs=2, lr_scheduler=functools.partial(CosineAnnealingLR, T_max=7))
    assert cosine_of(trainer).T_max == 7
    trainer = fit_lenet(tiny_data, tmp_path, epochs=1, lr_scheduler=CosineAnnealingToEndLR, warmup=1)
    assert cosine_of(trainer).T_max == 1  # never 0, which divides by zero as the warm-up ends


def test_a_cosine_without_t_max_is_refused_where_the_trainer_cannot_count_its_steps():
    model = LeNet5(lr_scheduler=CosineAnnealingToEndLR)
    model.trainer = L.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(UserInputError, match=r"takes its length from --trainer\.max_epochs"):
        model.configure_optimizers()
