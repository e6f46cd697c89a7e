"""The training path's speed options and its logging diet: what they change and what they must not."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.main import main
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models import CustomCNN, FastCNN, LeNet5
from fmnist_lightning.observe.progress import BatchProgressBar
from fmnist_lightning.observe.run_metrics import RunMetrics
from support import REPO, error_line


def make_cli(tiny_data, tmp_path, *args: str, config: str = "lenet") -> FashionMNISTCLI:
    base = ["--config", str(REPO / f"configs/{config}.yaml"), "--data.data_dir", str(tiny_data)]
    base += ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    return FashionMNISTCLI([*base, *args], run=False)


def progress_bars(cli: FashionMNISTCLI) -> list:
    return [callback for callback in cli.trainer.callbacks if isinstance(callback, (TQDMProgressBar, RichProgressBar))]


def test_the_default_bar_is_tqdm_redrawn_every_ten_steps(tiny_data, tmp_path):
    """tqdm's bar, counting batches where Lightning's counts its steps (steps_per_execution batches each)."""
    (bar,) = progress_bars(make_cli(tiny_data, tmp_path))
    assert type(bar) is BatchProgressBar and isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 10


def test_the_bar_can_be_turned_off_or_replaced(tiny_data, tmp_path):
    assert progress_bars(make_cli(tiny_data, tmp_path, "--trainer.enable_progress_bar", "false")) == []
    rich = make_cli(tiny_data, tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar")
    assert [type(bar) for bar in progress_bars(rich)] == [RichProgressBar]


def test_epoch_loss_and_accuracy_cover_every_batch(tiny_data, tmp_path):
    """Logged once an epoch from torchmetrics, they equal the loss and accuracy computed over the whole set."""
    cli = make_cli(tiny_data, tmp_path, "--trainer.max_epochs", "1", "--data.batch_size", "16")
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.model.eval()
    with torch.no_grad():
        batches = list(cli.datamodule.val_dataloader())
        logits = torch.cat([cli.model(images) for images, _ in batches])
        targets = torch.cat([targets for _, targets in batches])
    logged = cli.trainer.callback_metrics
    torch.testing.assert_close(logged["val/loss"], cli.model.loss(logits, targets))
    torch.testing.assert_close(logged["val/acc"], (logits.argmax(1) == targets.argmax(1)).float().mean())
    assert {"train/loss_epoch", "train/acc_epoch"} <= set(logged)


def test_channels_last_option_converts_the_net_and_keeps_its_function():
    torch.manual_seed(0)
    exact, fast = CustomCNN(), CustomCNN(channels_last=True)
    fast.load_state_dict(exact.state_dict())
    fast.setup("fit")
    conv = fast.net[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert state_keys(fast) == state_keys(exact)  # checkpoints are interchangeable
    exact.eval(), fast.eval()  # no dropout
    images = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(fast(images), exact(images), atol=1e-4, rtol=1e-4)


def test_a_compiled_net_trains_and_its_graph_reaches_tensorboard(tiny_data, tmp_path):
    """TensorBoard's graph is a jit trace, which cannot run through a torch.compile'd module: fit traces the plain
    net and trains the compiled one."""
    logs = tmp_path / "logs"
    args = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    args += ["--trainer.logger.init_args.save_dir", str(logs), "--model.init_args.compile", "true"]
    args += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    assert main(args) == 0
    events = EventAccumulator(str(logs / "LeNet5" / "version_0"))
    events.Reload()
    assert events.Tags()["graph"]


def state_keys(model: torch.nn.Module) -> list[str]:
    return list(model.state_dict())


def test_one_cycle_schedule_gets_the_run_length_from_the_trainer(tiny_data, tmp_path):
    cli = make_cli(
        tiny_data, tmp_path, "--data.batch_size", "16", "--data.val_size", "16", "--trainer.max_epochs", "2",
        config="fast",
    )  # fmt: skip
    assert isinstance(cli.model, FastCNN)
    cli.trainer.fit(cli.model, cli.datamodule)
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.OneCycleLR) and config.interval == "step"
    assert config.scheduler.total_steps == cli.trainer.global_step == 2 * 7  # 104 training images in batches of 16
    max_lr = config.scheduler.optimizer.param_groups[0]["max_lr"]
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] < max_lr / 25  # annealed below the cycle's start


STEP_WARMUP = ["--model.init_args.warmup", "5", "--model.init_args.scheduler_interval", "step"]
STEP_LR = '{"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}'
# never an improvement after the first epoch: the rate falls tenfold after each of the other two
PLATEAU_ARGS = '{"patience": 0, "threshold": 100, "threshold_mode": "abs"}'
PLATEAU = '{"class_path": "torch.optim.lr_scheduler.ReduceLROnPlateau", "init_args": ' + PLATEAU_ARGS + "}"


@pytest.mark.parametrize(
    "options",
    [
        ["--model.init_args.lr_scheduler", STEP_LR, "--model.init_args.warmup", "1"],
        ["--model.init_args.lr_scheduler", PLATEAU],
        ["--data.crop_padding", "2", "--data.hflip", "true", "--data.mixup_alpha", "0.4", *STEP_WARMUP],
    ],
    ids=["epoch-schedule", "plateau", "crop-flip-mixup-step-schedule"],
)
def test_steps_per_execution_takes_the_same_steps_as_one_at_a_time(tiny_data, tmp_path, options):
    """Three optimizer steps per training step: the same batches (the epoch's short last one included, or dropped
    with mixup), learning rates, weights and logged metrics as one step per training step."""
    runs = {}
    for steps in (1, 3):
        cli = make_cli(
            tiny_data, tmp_path / str(steps), "--model.init_args.steps_per_execution", str(steps),
            "--data.batch_size", "16", "--trainer.max_epochs", "3", *options,
        )  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)
        runs[steps] = cli
    one, three = runs[1], runs[3]
    mixup = "--data.mixup_alpha" in options
    assert three.trainer.num_training_batches == 3  # 120 images: 16 + 16 + 16 | … | 16 + 8
    assert three.trainer.global_step == one.trainer.global_step == 3 * (7 if mixup else 8)
    learning_rates = [cli.trainer.optimizers[0].param_groups[0]["lr"] for cli in (one, three)]
    assert learning_rates[0] == learning_rates[1]
    if PLATEAU in options:
        assert learning_rates[0] == pytest.approx(0.01 * 0.1**2)
    for name, weight in one.model.state_dict().items():
        assert torch.equal(three.model.state_dict()[name], weight), name
    assert set(three.trainer.callback_metrics) == set(one.trainer.callback_metrics)
    for name, value in one.trainer.callback_metrics.items():
        assert torch.equal(three.trainer.callback_metrics[name], value), name
    for cli in (one, three):
        run_metrics = next(c for c in cli.trainer.callbacks if isinstance(c, RunMetrics))
        assert run_metrics._train_images == 3 * (112 if mixup else 120)


class BackwardCounter(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.calls += 1


class StepCounter(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: object) -> None:
        self.calls += 1


@pytest.mark.parametrize("counter_type", [BackwardCounter, StepCounter])
def test_steps_per_execution_skips_lightnings_step_wrappers_only_while_no_hook_runs(tiny_data, tmp_path, counter_type):
    """Its steps do without manual_backward and LightningOptimizer.step while no hook of theirs does anything, and
    still count as steps; a callback with such a hook gets it on every optimizer step; the weights are the same."""
    runs = {}
    for name in ("plain", "hooked"):
        cli = make_cli(
            tiny_data, tmp_path / name, "--model.init_args.steps_per_execution", "3", "--data.batch_size", "16",
            "--trainer.max_epochs", "1",
        )  # fmt: skip
        counter = counter_type()
        if name == "hooked":
            cli.trainer.callbacks.append(counter)
        cli.trainer.fit(cli.model, cli.datamodule)
        runs[name] = cli
    assert runs["plain"].model._plain_steps
    assert not runs["hooked"].model._plain_steps
    assert counter.calls == runs["hooked"].trainer.global_step == runs["plain"].trainer.global_step == 8
    for name, weight in runs["plain"].model.state_dict().items():
        assert torch.equal(runs["hooked"].model.state_dict()[name], weight), name


def test_steps_per_execution_needs_a_one_cycle_length_and_at_least_one(tiny_data, tmp_path):
    one_cycle = '{"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.1}}'
    cli = make_cli(
        tiny_data, tmp_path, "--model.init_args.steps_per_execution", "4", "--model.init_args.lr_scheduler", one_cycle
    )
    with pytest.raises(UserInputError, match="steps_per_execution 4: OneCycleLR needs its total_steps"):
        cli.trainer.fit(cli.model, cli.datamodule)
    with pytest.raises(UserInputError, match="must be ≥ 1, got 0"):
        LeNet5(steps_per_execution=0)


def test_steps_per_execution_refuses_weight_averaging_before_the_run_folder(tiny_data, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = ["fit", "--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    args += ["--trainer.logger.init_args.save_dir", str(logs), "--model.init_args.steps_per_execution", "4"]
    assert main([*args, "--trainer.callbacks+=fmnist_lightning.training.EMAWithWarmup"]) == 2
    assert error_line(capsys.readouterr().err).startswith("error: EMAWithWarmup averages once per training step")
    assert not logs.exists()
