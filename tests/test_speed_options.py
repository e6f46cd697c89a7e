"""The training path's speed options and its logging diet: what they change and what they must not."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.core.optimizer import LightningOptimizer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.commands.main import main
from fmnist_lightning.errors import UserInputError
from fmnist_lightning.models import CustomCNN, FastCNN
from fmnist_lightning.observe.progress import BatchProgressBar
from fmnist_lightning.observe.run_metrics import RunMetrics
from fmnist_lightning.training.speed import SpeedSettings
from support import REPO


def make_cli(tiny_data, tmp_path, *args: str, config: str = "lenet") -> FashionMNISTCLI:
    base = ["--config", str(REPO / f"configs/{config}.yaml"), "--data.data_dir", str(tiny_data)]
    base += ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    return FashionMNISTCLI([*base, *args], run=False)


@pytest.fixture
def lightning_steps(monkeypatch) -> list[int]:
    """The calls of LightningOptimizer.step (the step with Lightning's hooks around it), counted."""
    calls = [0]
    step = LightningOptimizer.step

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(LightningOptimizer, "step", counted)
    return calls


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
    exact, fast = CustomCNN(), CustomCNN()
    fast.load_state_dict(exact.state_dict())
    SpeedSettings(channels_last=True).apply(fast)
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
    args += ["--trainer.logger.init_args.save_dir", str(logs), "--speed.compile", "true"]
    args += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    assert main(args) == 0
    events = EventAccumulator(str(logs / "LeNet5" / "version_0"))
    events.Reload()
    assert events.Tags()["graph"]


def state_keys(model: torch.nn.Module) -> list[str]:
    return list(model.state_dict())


def test_one_cycle_schedule_gets_the_run_length_from_the_trainer(tiny_data, tmp_path):
    cli = make_cli(
        tiny_data, tmp_path, "--data.batch_size", "16", "--data.validation.val_size", "16", "--trainer.max_epochs", "2",
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
        [
            "--data.augmentation.crop_padding",
            "2",
            "--data.augmentation.hflip",
            "true",
            "--data.augmentation.mixup_alpha",
            "0.4",
            *STEP_WARMUP,
        ],
    ],
    ids=["epoch-schedule", "plateau", "crop-flip-mixup-step-schedule"],
)
def test_steps_per_execution_takes_the_same_steps_as_one_at_a_time(tiny_data, tmp_path, options):
    """Three optimizer steps per training step: the same batches (the epoch's short last one included, or dropped
    with mixup), learning rates, weights and logged metrics as one step per training step."""
    runs = {}
    for steps in (1, 3):
        cli = make_cli(
            tiny_data, tmp_path / str(steps), "--speed.steps_per_execution", str(steps),
            "--data.batch_size", "16", "--trainer.max_epochs", "3", *options,
        )  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)
        runs[steps] = cli
    one, three = runs[1], runs[3]
    mixup = "--data.augmentation.mixup_alpha" in options
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
def test_steps_per_execution_skips_lightnings_step_wrappers_only_while_no_hook_runs(
    tiny_data, tmp_path, counter_type, lightning_steps
):
    """Its steps do without manual_backward and LightningOptimizer.step while no hook of theirs does anything, and
    still count as steps; a callback with such a hook gets it on every optimizer step; the weights are the same."""
    runs, wrapped = {}, {}
    for name in ("plain", "hooked"):
        cli = make_cli(
            tiny_data, tmp_path / name, "--speed.steps_per_execution", "3", "--data.batch_size", "16",
            "--trainer.max_epochs", "1",
        )  # fmt: skip
        counter = counter_type()
        if name == "hooked":
            cli.trainer.callbacks.append(counter)
        lightning_steps[0] = 0
        cli.trainer.fit(cli.model, cli.datamodule)
        runs[name], wrapped[name] = cli, lightning_steps[0]
    assert wrapped == {"plain": 0, "hooked": 8}
    assert counter.calls == runs["hooked"].trainer.global_step == runs["plain"].trainer.global_step == 8
    for name, weight in runs["plain"].model.state_dict().items():
        assert torch.equal(runs["hooked"].model.state_dict()[name], weight), name


def test_steps_per_execution_is_at_least_one():
    with pytest.raises(UserInputError, match="must be ≥ 1, got 0"):
        SpeedSettings(steps_per_execution=0)


class LearningRates(L.Callback):
    """The learning rate of every optimizer step, read by torch's own step hook (no Lightning step hook: the steps
    of steps_per_execution keep their plain path)."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.optimizers[0].register_step_pre_hook(lambda opt, *_: self.rates.append(opt.param_groups[0]["lr"]))


SMALL_FAST_CNN = ["--model.init_args.width", "4", "--model.init_args.hidden", "16"]  # fast.yaml's, smaller
COSINE_TO_END = '{"class_path": "fmnist_lightning.training.schedules.CosineAnnealingToEndLR"}'


@pytest.mark.parametrize(
    ("options", "steps"),
    [
        ([], 2 * 7),
        (["--trainer.max_steps", "10"], 10),  # stops within a group of the second epoch
        (["--model.init_args.lr_scheduler", COSINE_TO_END, *STEP_WARMUP], 2 * 7),
    ],
    ids=["one-cycle", "one-cycle-max-steps", "cosine-step-warmup"],
)
def test_steps_per_execution_sizes_a_schedule_by_the_runs_optimizer_steps(
    tiny_data, tmp_path, options, steps, lightning_steps
):
    """A OneCycleLR without total_steps (fast.yaml's) or a step-wise cosine without T_max over four optimizer steps per
    training step: sized by the run's optimizer steps, not Lightning's training steps (groups of four), so the same
    learning rate at every step and the same weights as one at a time, and never stepped past its end (OneCycleLR
    raises there) though each epoch ends in a short group: 104 images in batches of 16, 16 + 16 + 16 + 16 | 16 + 16 +
    8."""
    runs = {}
    for k in (1, 4):
        cli = make_cli(
            tiny_data, tmp_path / str(k), "--speed.steps_per_execution", str(k), "--data.batch_size", "16",
            "--data.validation.val_size", "16", "--trainer.max_epochs", "2", *SMALL_FAST_CNN, *options, config="fast",
        )  # fmt: skip
        rates = LearningRates()
        cli.trainer.callbacks.append(rates)
        lightning_steps[0] = 0
        cli.trainer.fit(cli.model, cli.datamodule)
        runs[k] = cli, rates.rates
    (one, one_rates), (four, four_rates) = runs[1], runs[4]
    assert four.trainer.num_training_batches == 2 and lightning_steps[0] == 0  # the plain path
    assert four.trainer.global_step == one.trainer.global_step == steps == len(four_rates)
    assert four_rates == one_rates and len(set(four_rates)) > steps // 2  # a schedule, not a constant
    schedulers = [cli.trainer.lr_scheduler_configs[0].scheduler for cli in (one, four)]
    if "--model.init_args.lr_scheduler" in options:  # the warm-up, then the cosine over the steps after it
        assert [s._schedulers[1].T_max for s in schedulers] == [2 * 7 - 5] * 2
        assert four.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    else:
        assert [s.total_steps for s in schedulers] == [steps] * 2
    assert [s.last_epoch for s in schedulers] == [steps] * 2
    for name, weight in one.model.state_dict().items():
        assert torch.equal(four.model.state_dict()[name], weight), name


EMA_WITH_WARMUP = {"class_path": "fmnist_lightning.training.EMAWithWarmup", "init_args": {"bn_batches": 6}}
# averages after the optimizer steps of step_idx 2, 5, 8, …: not at the ends of the groups of four
EMA_EVERY_THIRD = {
    "class_path": "lightning.pytorch.callbacks.EMAWeightAveraging",
    "init_args": {"decay": 0.9, "update_every_n_steps": 3, "update_starting_at_step": 2},
}


@pytest.mark.parametrize(
    ("ema", "updates"), [(EMA_WITH_WARMUP, 2 * 7), (EMA_EVERY_THIRD, 4)], ids=["ema-with-warmup", "every-third"]
)
def test_steps_per_execution_averages_weights_after_every_optimizer_step(
    tiny_data, tmp_path, ema, updates, lightning_steps
):
    """Weight averaging with four optimizer steps per training step: updated after each optimizer step, and asked
    whether to with each step's index, so the same average (validated, checkpointed and left in the model after
    fit) as one at a time; EMAWithWarmup's batch-norm statistics from the same 6 batches of 16, where a loader item
    holds four of them. FastCNN has batch norm; 104 training images, 16 + 16 + 16 + 16 | 16 + 16 + 8 an epoch."""
    runs = {}
    for k in (1, 4):
        cli = make_cli(
            tiny_data, tmp_path / str(k), "--speed.steps_per_execution", str(k), "--data.batch_size", "16",
            "--data.validation.val_size", "16", "--trainer.max_epochs", "2", *SMALL_FAST_CNN,
            f"--trainer.callbacks+={json.dumps(ema)}", config="fast",
        )  # fmt: skip
        lightning_steps[0] = 0
        cli.trainer.fit(cli.model, cli.datamodule)
        (last,) = (tmp_path / str(k) / "logs").rglob("last.ckpt")
        runs[k] = cli, torch.load(last, weights_only=False)
    (one, one_saved), (four, four_saved) = runs[1], runs[4]
    assert lightning_steps[0] == 0  # the four's run (counted last): its plain path
    assert four.trainer.global_step == one.trainer.global_step == 2 * 7
    for saved in (one_saved, four_saved):
        assert int(saved["averaging_state"]["n_averaged"]) == updates
    for key in ("state_dict", "current_model_state"):  # the average; the trained weights
        assert one_saved[key].keys() == four_saved[key].keys()
        for name, weight in one_saved[key].items():
            assert torch.equal(four_saved[key][name], weight), f"{key}: {name}"
    assert not torch.equal(one_saved["state_dict"]["net.0.weight"], one_saved["current_model_state"]["net.0.weight"])
    for name, weight in one.model.state_dict().items():  # the average, after fit
        assert torch.equal(four.model.state_dict()[name], weight), name
    for name, value in one.trainer.callback_metrics.items():  # validated with the average
        assert torch.equal(four.trainer.callback_metrics[name], value), name


def test_several_steps_per_training_step_log_on_one_step_axis(tiny_data, tmp_path):
    """TensorBoard's step axis counts optimizer steps with three of them per training step, as with one: the same
    scalars at the same steps (log_every_n_steps counting optimizer steps: each fourth step's loss, written at its
    own step), and the confusion matrices at the step of the validation's scalars, not at another count."""
    runs = {}
    for k in (1, 3):
        cli = make_cli(
            tiny_data, tmp_path / str(k), "--speed.steps_per_execution", str(k), "--data.batch_size", "16",
            "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "4",
        )  # fmt: skip
        cli.trainer.fit(cli.model, cli.datamodule)
        (run,) = (tmp_path / str(k) / "logs").rglob("version_0")
        events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        runs[k] = events
    one, three = runs[1], runs[3]
    curves = sorted(tag for tag in one.Tags()["scalars"] if not tag.startswith("~"))  # not the timings
    assert "train/loss_step" in curves and sorted(tag for tag in three.Tags()["scalars"] if tag in curves) == curves
    for tag in curves:
        assert [(e.step, e.value) for e in three.Scalars(tag)] == [(e.step, e.value) for e in one.Scalars(tag)], tag
    # 120 images in batches of 16: 8 optimizer steps an epoch, in groups of 3 + 3 + 2
    assert [event.step for event in one.Scalars("train/loss_step")] == [3, 7, 11, 15]
    for events in (one, three):
        figures = [event.step for event in events.Images("val/confusion_matrix")]
        assert figures == [event.step for event in events.Scalars("val/acc")] == [7, 15]


@pytest.mark.parametrize(("first", "then"), [(1, 4), (4, 1)])
def test_a_run_resumed_with_another_steps_per_execution_goes_on_counting_its_steps(tiny_data, tmp_path, first, then):
    """Lightning counts the optimizer steps of automatic and manual optimization apart (global_step reads the one of
    the model's mode): a speed setting changed on resume must not restart the count, which max_steps, schedules and
    checkpoints read. 120 images in batches of 16: 8 steps an epoch."""
    args = ("--data.batch_size", "16", "--trainer.max_epochs")
    cli = make_cli(tiny_data, tmp_path / "first", "--speed.steps_per_execution", str(first), *args, "1")
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 8  # after the fit too, in automatic optimization again
    (last,) = (tmp_path / "first").rglob("last.ckpt")
    resumed = make_cli(tiny_data, tmp_path / "then", "--speed.steps_per_execution", str(then), *args, "2")
    resumed.trainer.fit(resumed.model, resumed.datamodule, ckpt_path=str(last))
    assert resumed.trainer.global_step == 16
    (last,) = (tmp_path / "then").rglob("last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 16
