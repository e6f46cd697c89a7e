"""No host synchronisation in a training step, except on the steps the logger writes.

On a GPU every ``.item()``, ``bool(tensor)``, ``float(tensor)``, ``.tolist()``, ``.cpu()`` or ``.numpy()`` of a
tensor waits for the device to finish all the work queued so far, so the host cannot run ahead and queue the next
step: at small batch sizes that bounds training. A CPU run cannot see the waits, but it sees the calls: a fit through
the CLI with every default callback and the progress bar on counts them, training step by training step.
"""

from __future__ import annotations

import traceback
from collections import defaultdict
from typing import Any

import lightning as L
import pytest
import torch

from fmnist_lightning.commands.cli import FashionMNISTCLI
from fmnist_lightning.lightning_private import should_update_logs
from fmnist_lightning.observe.progress import BatchProgressBar
from support import REPO, write_dataset

# the Tensor methods that copy a value to the host, and so wait for the device (``__index__``: ``range(tensor)``)
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
BATCH_SIZE = 16
TRAIN_IMAGES = 16 * 24  # 24 batches an epoch
LOG_EVERY = 7  # log steps inside each epoch, none on a bar refresh (every 10 batches): each must be seen alone


class SyncCounter(L.Callback):
    """The host syncs made by anything between the start of a training step and the start of the next one (so
    Lightning's work after the step's hooks counts as that step's), by step; from the epoch's second step to its
    second-to-last, which leaves out the work at an epoch's start and end."""

    def __init__(self) -> None:
        self.calls: dict[tuple[int, int], list[str]] = defaultdict(list)  # (epoch, batch_idx) → calls
        self.logged: set[tuple[int, int]] = set()  # the steps the logger writes
        self.counted: list[tuple[int, int]] = []
        self._step: tuple[int, int] | None = None
        self._originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._counting(name, original))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def restore(self) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def _counting(self, name: str, original: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self._step is not None:
                where = "".join(traceback.format_stack(limit=8)[:-1])
                self.calls[self._step].append(f"Tensor.{name}\n{where}")
            return original(tensor, *args, **kwargs)

        return counted

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step = None
        if 1 <= batch_idx <= trainer.num_training_batches - 2:
            self._step = (trainer.current_epoch, batch_idx)
            self.counted.append(self._step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # whether the logger writes this training step is known once it is done: with several optimizer steps in
        # it (--speed.steps_per_execution), where one of them is a log step (log_every_n_steps)
        if self._step is not None and should_update_logs(trainer):
            self.logged.add(self._step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = None


@pytest.mark.parametrize("steps_per_execution", [1, 2], ids=["automatic", "manual"])
def test_training_steps_make_no_host_sync_but_on_log_steps(tmp_path, steps_per_execution):
    data = tmp_path / "fmnist"
    write_dataset(data, num_train=TRAIN_IMAGES, num_test=32)
    args = ["--config", str(REPO / "configs/lenet.yaml"), "--data.data_dir", str(data)]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.max_epochs", "2"]
    args += ["--data.batch_size", str(BATCH_SIZE), "--speed.steps_per_execution", str(steps_per_execution)]
    args += ["--trainer.log_every_n_steps", str(LOG_EVERY), "--trainer.enable_progress_bar", "true"]
    cli = FashionMNISTCLI(args, run=False)
    (bar,) = [callback for callback in cli.trainer.callbacks if isinstance(callback, BatchProgressBar)]
    counter = SyncCounter()
    cli.trainer.callbacks.insert(0, counter)  # its hooks first: a step starts before any other hook runs
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
    finally:
        counter.restore()
    steps = len(counter.counted)
    assert steps == 2 * (TRAIN_IMAGES // BATCH_SIZE // steps_per_execution - 2)
    assert 0 < len(counter.logged) < steps / 2  # log steps, and more steps after them that must not sync
    synced = {step: calls for step, calls in counter.calls.items() if step not in counter.logged}
    report = "\n".join(f"step {step}: {len(calls)} syncs, the first:\n{calls[0]}" for step, calls in synced.items())
    assert not synced, report
    # the bar still shows the figures, as of the steps the logger wrote and the validation
    postfix = bar.train_progress_bar.postfix
    assert all(f"{name}=" in postfix for name in ("train/loss_step", "train/acc_step", "val/loss", "val/acc")), postfix
