"""The training path's speed options and its logging diet: what they change and what they must not."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from fmnist_lightning.cli import FashionMNISTCLI
from fmnist_lightning.models import CustomCNN, FastCNN
from fmnist_lightning.models.keras_layers import ContiguousBatchNorm2d
from support import REPO


def make_cli(tiny_data, tmp_path, *args: str) -> FashionMNISTCLI:
    base = ["--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(tiny_data)]
    base += ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    return FashionMNISTCLI([*base, *args], run=False)


def progress_bars(cli: FashionMNISTCLI) -> list:
    return [callback for callback in cli.trainer.callbacks if isinstance(callback, (TQDMProgressBar, RichProgressBar))]


def test_the_default_bar_is_tqdm_redrawn_every_ten_steps(tiny_data, tmp_path):
    (bar,) = progress_bars(make_cli(tiny_data, tmp_path))
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 10


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
    assert all(layer.keep_layout for layer in fast.net.modules() if isinstance(layer, ContiguousBatchNorm2d))
    assert state_keys(fast) == state_keys(exact)  # checkpoints are interchangeable
    exact.eval(), fast.eval()  # no dropout
    images = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(fast(images), exact(images), atol=1e-4, rtol=1e-4)


def state_keys(model: torch.nn.Module) -> list[str]:
    return list(model.state_dict())


def test_one_cycle_schedule_gets_the_run_length_from_the_trainer(tiny_data, tmp_path):
    cli = make_cli(
        tiny_data, tmp_path, "--config", str(REPO / "configs/fast.yaml"), "--data.data_dir", str(tiny_data),
        "--data.batch_size", "16", "--data.val_size", "16", "--trainer.max_epochs", "2",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
    )  # fmt: skip
    assert isinstance(cli.model, FastCNN)
    cli.trainer.fit(cli.model, cli.datamodule)
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.OneCycleLR) and config.interval == "step"
    assert config.scheduler.total_steps == cli.trainer.global_step == 2 * 7  # 104 training images in batches of 16
    max_lr = config.scheduler.optimizer.param_groups[0]["max_lr"]
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] < max_lr / 25  # annealed below the cycle's start
